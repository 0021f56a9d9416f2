import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * Replaces `countersign_issue_batch` (0006, one approval per call) with `countersign_issue`: the same
 * write for each request, in order, but every request names its own approval, terms and rate-limit
 * counters, so one call can carry requests for many approvals. For each request: take a point from
 * its agent's and then its approval's fixed-window counter in `issuance_rate_limits` (when it names
 * counters), give back the point of the bucket that did not refuse when the other one refuses, else
 * take one token of its approval's budget — only while the approval is approved, unexpired, under
 * budget and still on the terms the request was decided on — and insert its `issued_tokens` and
 * `audit_events` rows. Requests are independent: one refused does not stop the next. The caller
 * orders requests by (agent, approval), so every call locks rows in one global order (agent counter,
 * then for each of the agent's approvals its counter and its row) and two calls cannot deadlock.
 *
 * Returns one row per request: `n` (1-based), `outcome` (`issued`, `limited_client`,
 * `limited_approval` or `refused`), `tokens_issued` after an issue, and for a limited request the end
 * of the refusing window (epoch ms).
 */
export async function up(db: Db): Promise<void> {
  await sql`drop function if exists countersign_issue_batch`.execute(db);
  await sql`
    create function countersign_issue(
      p_now bigint,
      p_approval_ids text[], p_client_ids text[], p_resources text[],
      p_terms_scopes text[], p_terms_subjects text[], p_terms_expires timestamptz[], p_terms_rate_limits jsonb[],
      p_client_keys text[], p_approval_keys text[], p_client_expires bigint[], p_approval_expires bigint[],
      p_client_points integer[], p_approval_points integer[],
      p_jtis text[], p_subs text[], p_scopes text[], p_jkts text[],
      p_iats timestamptz[], p_exps timestamptz[], p_details jsonb[]
    ) returns table (n integer, outcome text, tokens_issued integer, expire bigint)
    language plpgsql
    as $body$
    #variable_conflict use_column
    declare
      v_points bigint;
      v_expire bigint;
      v_client_points bigint;
      v_client_expire bigint;
      v_issued integer;
    begin
      for i in 1 .. coalesce(array_length(p_jtis, 1), 0) loop
        n := i;
        tokens_issued := null;
        expire := null;
        if p_client_keys[i] is not null then
          insert into issuance_rate_limits as t (key, points, expire)
            values (p_client_keys[i], 1, p_client_expires[i])
          on conflict (key) do update set
            points = case when coalesce(t.expire, 0) <= p_now then 1 else t.points + 1 end,
            expire = case when coalesce(t.expire, 0) <= p_now then excluded.expire else t.expire end
          returning t.points, t.expire into v_client_points, v_client_expire;
          insert into issuance_rate_limits as t (key, points, expire)
            values (p_approval_keys[i], 1, p_approval_expires[i])
          on conflict (key) do update set
            points = case when coalesce(t.expire, 0) <= p_now then 1 else t.points + 1 end,
            expire = case when coalesce(t.expire, 0) <= p_now then excluded.expire else t.expire end
          returning t.points, t.expire into v_points, v_expire;
          if v_client_points > p_client_points[i] then
            update issuance_rate_limits set points = points - 1
              where key = p_approval_keys[i] and points > 0;
            outcome := 'limited_client';
            expire := v_client_expire;
            return next;
            continue;
          end if;
          if v_points > p_approval_points[i] then
            update issuance_rate_limits set points = points - 1
              where key = p_client_keys[i] and points > 0;
            outcome := 'limited_approval';
            expire := v_expire;
            return next;
            continue;
          end if;
        end if;
        update approvals as a set tokens_issued = a.tokens_issued + 1
          where a.id = p_approval_ids[i] and a.client_id = p_client_ids[i] and a.status = 'approved'
            and a.expires_at > now() and a.tokens_issued < a.max_tokens
            and a.resource = p_resources[i] and a.scope = p_terms_scopes[i]
            and a.subject is not distinct from p_terms_subjects[i]
            and a.expires_at between p_terms_expires[i] - interval '1 millisecond'
              and p_terms_expires[i] + interval '1 millisecond'
            and a.rate_limit is not distinct from p_terms_rate_limits[i]
          returning a.tokens_issued into v_issued;
        if not found then
          outcome := 'refused';
          return next;
          continue;
        end if;
        insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, jkt, iat, exp)
          values (p_jtis[i], p_approval_ids[i], p_client_ids[i], p_subs[i], p_resources[i], p_scopes[i],
            p_jkts[i], p_iats[i], p_exps[i]);
        insert into audit_events (event, outcome, reason, approval_id, client_id, actor, detail)
          values ('token_exchange', 'granted', null, p_approval_ids[i], p_client_ids[i], p_client_ids[i],
            p_details[i]);
        outcome := 'issued';
        tokens_issued := v_issued;
        return next;
      end loop;
    end;
    $body$`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`drop function if exists countersign_issue`.execute(db);
}
