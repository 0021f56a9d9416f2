import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * Less written per token, and a cost that stays flat as the tables grow:
 *
 * - `issued_tokens`' primary key becomes (`exp`, `jti`) instead of (`jti`, `exp`): keyed by time first, an
 *   insert lands beside the previous one (the right-hand edge of the index, per distinct token lifetime)
 *   instead of on a random, cold page of an index of millions of random `jti`s, which after every
 *   checkpoint costs a full-page image in the WAL. It still refuses a duplicate (`exp`, `jti`); a `jti`
 *   is 144 random bits, so two tokens never share one in practice. Nothing reads `issued_tokens` by `jti`.
 * - `issued_tokens_client_iat_idx` is dropped: its one reader, the policy context
 *   `recent_exchanges_per_minute`, now reads `exchange_counters`.
 * - `exchange_counters`: tokens issued per (agent, `iat` second), one row each, maintained by
 *   `countersign_issue` in the same transaction as the tokens. `recent_exchanges_per_minute` sums at
 *   most 60 of an agent's rows (the seconds after `now - 60 s`), which counts exactly the tokens whose
 *   `iat` (whole seconds) is after `now - 60 s`, as the count over `issued_tokens` did. The retention
 *   job deletes rows older than that window.
 * - `countersign_issue` (same parameters, same answers): after writing the batch's tokens it adds them to
 *   `exchange_counters`, one upsert per (agent, second), in (agent, second) order, after every approval
 *   row the call locks, so calls still lock rows in one global order.
 */
export async function up(db: Db): Promise<void> {
  await sql`alter table issued_tokens drop constraint issued_tokens_pkey`.execute(db);
  await sql`alter table issued_tokens add constraint issued_tokens_pkey primary key (exp, jti)`.execute(db);
  await sql`drop index issued_tokens_client_iat_idx`.execute(db);

  await sql`
    create table exchange_counters (
      client_id text not null,
      iat_second bigint not null,
      exchanges integer not null constraint exchange_counters_exchanges_check check (exchanges >= 1),
      primary key (client_id, iat_second)
    ) with (fillfactor = 70)`.execute(db);

  await sql`
    create or replace function countersign_issue(
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
      v_now timestamptz;
      v_row record;
      v_counted integer[] := '{}';
    begin
      v_now := now();
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
            and a.expires_at > v_now and a.tokens_issued < a.max_tokens
            and a.resource = p_resources[i] and a.scope = p_terms_scopes[i]
            and a.subject is not distinct from p_terms_subjects[i]
            and a.expires_at between p_terms_expires[i] - interval '1 millisecond'
              and p_terms_expires[i] + interval '1 millisecond'
            and a.rate_limit is not distinct from p_terms_rate_limits[i]
          returning a.tokens_issued into v_issued;
        if not found then
          select a.client_id, a.status, a.expires_at, a.tokens_issued, a.max_tokens into v_row
            from approvals as a where a.id = p_approval_ids[i];
          outcome := case
            when not found or v_row.client_id <> p_client_ids[i] then 'not_found'
            when v_row.status in ('denied', 'revoked') then v_row.status
            when v_row.expires_at <= v_now then 'expired'
            when v_row.status = 'pending' then 'pending'
            when v_row.tokens_issued >= v_row.max_tokens then 'used_up'
            else 'terms_changed'
          end;
          return next;
          continue;
        end if;
        insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, jkt, iat, exp)
          values (p_jtis[i], p_approval_ids[i], p_client_ids[i], p_subs[i], p_resources[i], p_scopes[i],
            p_jkts[i], p_iats[i], p_exps[i]);
        insert into audit_events (event, outcome, reason, approval_id, client_id, actor, detail)
          values ('token_exchange', 'granted', null, p_approval_ids[i], p_client_ids[i], p_client_ids[i],
            p_details[i]);
        v_counted := v_counted || i;
        outcome := 'issued';
        tokens_issued := v_issued;
        return next;
      end loop;
      insert into exchange_counters as c (client_id, iat_second, exchanges)
        select p_client_ids[k], floor(extract(epoch from p_iats[k]))::bigint, count(*)
          from unnest(v_counted) as k
          group by 1, 2
          order by 1, 2
        on conflict (client_id, iat_second) do update set exchanges = c.exchanges + excluded.exchanges;
    end;
    $body$`.execute(db);
}

/** Reverting would have to rebuild the (`jti`, `exp`) key over every partition: a manual operation. */
export async function down(): Promise<void> {
  throw new Error(
    "2026_11_28_0014_write_less cannot be reverted: restore issued_tokens' (jti, exp) key, its (client_id, iat) index and migration 0008's countersign_issue by hand",
  );
}
