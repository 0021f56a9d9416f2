import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/**
 * `countersign_issue` says why it refused. The parameters and what an issued request writes are those
 * of migration 0006; a request that takes no token now answers, instead of `refused`, the reason read
 * in the same call from the approval as it then stands:
 * `not_found` (no such approval, or another agent's), `pending`, `denied`, `revoked`, `expired`,
 * `used_up` (`tokens_issued` = `max_tokens`) or `terms_changed` (still usable, but no longer on the
 * terms the request was decided on: the caller decides again). The checks run in that order, which is
 * the order in which the application explains an unusable approval. Rate-limited requests keep
 * `limited_client` / `limited_approval` with their window's end in `expire`.
 */
export async function up(db: Db): Promise<void> {
  await sql`drop function countersign_issue(bigint, text[], text[], text[], text[], text[],
    timestamptz[], jsonb[], text[], text[], bigint[], bigint[], integer[], integer[], text[], text[],
    text[], text[], timestamptz[], timestamptz[], jsonb[])`.execute(db);
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
      v_now timestamptz;
      v_row record;
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
        outcome := 'issued';
        tokens_issued := v_issued;
        return next;
      end loop;
    end;
    $body$`.execute(db);
}

/** Back to migration 0006's function (which answers every refusal as `refused`). */
export async function down(): Promise<void> {
  throw new Error(
    "2026_11_28_0008_issue_reasons cannot be reverted: restore migration 0006's countersign_issue by hand",
  );
}
