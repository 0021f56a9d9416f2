import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * The token exchange's write, as database functions (one round trip for any number of exchanges):
 *
 * - `countersign_take_point(key, expire, now)`: one point from a fixed-window counter in
 *   `issuance_rate_limits` (rate-limiter-flexible's layout: a window that ended restarts at 1 with the
 *   new `expire`); returns the points now counted and the window's end (epoch ms).
 * - `countersign_take_limits(…)`: a point from the agent's counter, then from the approval's; when
 *   one refuses, the point taken from the other is given back. Returns `admitted`, `limited_client` or
 *   `limited_approval`, and the refusing window's end.
 * - `countersign_issue(…)`: for each request in order, exactly what one exchange does alone — its
 *   limits (when it names counters), then one token of its approval's budget, only while the approval
 *   is approved, unexpired, under budget and still on the terms the request was decided on, then its
 *   `issued_tokens` and `audit_events` rows. Requests are independent: one refused does not stop the
 *   next. The caller orders requests by (agent, approval), so every call locks rows in one global order
 *   (agent counter, then per approval its counter and its row) and two calls cannot deadlock. Returns
 *   one row per request: `n` (1-based), `outcome` (`issued`, `limited_client`, `limited_approval`,
 *   `refused`), `tokens_issued` after an issue, and for a limited request its window's end.
 */
export async function up(db: Db): Promise<void> {
  await sql`
    create function countersign_take_point(p_key text, p_expire bigint, p_now bigint,
      out points bigint, out expire bigint)
    language sql
    as $body$
      insert into issuance_rate_limits as t (key, points, expire) values (p_key, 1, p_expire)
      on conflict (key) do update set
        points = case when coalesce(t.expire, 0) <= p_now then 1 else t.points + 1 end,
        expire = case when coalesce(t.expire, 0) <= p_now then excluded.expire else t.expire end
      returning t.points, t.expire
    $body$`.execute(db);

  await sql`
    create function countersign_take_limits(
      p_client_key text, p_approval_key text, p_client_expire bigint, p_approval_expire bigint,
      p_client_points integer, p_approval_points integer, p_now bigint,
      out outcome text, out expire bigint)
    language plpgsql
    as $body$
    declare
      v_client record;
      v_approval record;
    begin
      select * into v_client from countersign_take_point(p_client_key, p_client_expire, p_now);
      select * into v_approval from countersign_take_point(p_approval_key, p_approval_expire, p_now);
      if v_client.points > p_client_points then
        update issuance_rate_limits set points = points - 1 where key = p_approval_key and points > 0;
        outcome := 'limited_client';
        expire := v_client.expire;
      elsif v_approval.points > p_approval_points then
        update issuance_rate_limits set points = points - 1 where key = p_client_key and points > 0;
        outcome := 'limited_approval';
        expire := v_approval.expire;
      else
        outcome := 'admitted';
      end if;
    end;
    $body$`.execute(db);

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
      v_limits record;
      v_issued integer;
    begin
      for i in 1 .. coalesce(array_length(p_jtis, 1), 0) loop
        n := i;
        tokens_issued := null;
        expire := null;
        if p_client_keys[i] is not null then
          select * into v_limits from countersign_take_limits(p_client_keys[i], p_approval_keys[i],
            p_client_expires[i], p_approval_expires[i], p_client_points[i], p_approval_points[i], p_now);
          if v_limits.outcome <> 'admitted' then
            outcome := v_limits.outcome;
            expire := v_limits.expire;
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
  await sql`drop function if exists countersign_take_limits`.execute(db);
  await sql`drop function if exists countersign_take_point`.execute(db);
}
