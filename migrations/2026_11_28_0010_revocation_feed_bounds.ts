import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/** Advisory lock key that serializes cursor assignment in `revocations` ("csrv" in ASCII; migration 0003). */
const REVOCATION_CURSOR_LOCK = 0x63737276;

/**
 * A bounded revocation feed:
 *
 * - `revocation_feed`: one row. `epoch` is a random id drawn when the database is created (a database
 *   re-created, or restored from another one's backup, has another); feed cursors carry it, so a
 *   gateway's cursor from another feed is recognised. `compacted_through` is the largest cursor
 *   compacted away: the feed's low-water mark (compaction removes only a prefix, so every entry above it
 *   is still held), which also keeps the feed's head (the largest cursor ever committed) from moving
 *   backwards when compaction empties the table.
 * - `revocations.needed_until`: until when a gateway may need the entry, fixed when it is written (no
 *   token can be minted after an approval is revoked or has expired): the later of the time it is
 *   written and the latest `exp` of the tokens minted under the approval (for an expiry, never before
 *   the approval's `expires_at`: tokens never outlive it). The application compacts it away once that
 *   is further in the past than the gateways' clock tolerance. NULL when the approval minted tokens
 *   whose `issued_tokens` rows are gone: the application then bounds it by the approval's expiry and
 *   the longest token lifetime.
 * - Cursors move forward with the database server's clock: each new cursor is the larger of the next
 *   sequence value and the current time in microseconds since 1970 (still drawn under the transaction
 *   lock of migration 0003, so cursors commit in order). A database restored to an earlier point
 *   restores its sequence too, but not the clock: its new entries get cursors above every cursor a
 *   gateway saw before the restore, so a gateway continuing from its cursor misses none of them.
 */
export async function up(db: Db): Promise<void> {
  await sql`create table revocation_feed (
    singleton boolean primary key default true check (singleton),
    epoch text not null check (epoch ~ '^[0-9a-f]{16}$'),
    compacted_through bigint not null default 0 check (compacted_through >= 0),
    created_at timestamptz not null default now()
  )`.execute(db);
  await sql`insert into revocation_feed (epoch) values (substr(md5(gen_random_uuid()::text), 1, 16))`.execute(
    db,
  );

  await sql`alter table revocations add column needed_until timestamptz`.execute(db);
  await sql`update revocations r set needed_until = case
      when r.reason = 'expired' then greatest(now(), a.expires_at,
        (select max(t.exp) from issued_tokens t where t.approval_id = r.approval_id))
      when a.tokens_issued = 0 then now()
      else greatest(now(), (select max(t.exp) from issued_tokens t where t.approval_id = r.approval_id))
    end
    from approvals a where a.id = r.approval_id
      and (r.reason = 'expired' or a.tokens_issued = 0
        or exists (select 1 from issued_tokens t where t.approval_id = r.approval_id))`.execute(db);
  await sql`create index revocations_needed_until_idx on revocations (needed_until)`.execute(db);
  // The sweeper no longer reads the latest swept expiry (compaction removes it).
  await sql`drop index if exists revocations_expired_at_idx`.execute(db);

  await sql`create or replace function revocations_ordered_cursor() returns trigger language plpgsql as $$
    declare
      v_cursor bigint;
      v_approval record;
      v_found boolean;
      v_exp timestamptz;
    begin
      perform pg_advisory_xact_lock(${sql.lit(REVOCATION_CURSOR_LOCK)});
      v_cursor := greatest(
        nextval(pg_get_serial_sequence('revocations', 'cursor')),
        (extract(epoch from clock_timestamp()) * 1000000)::bigint
      );
      perform setval(pg_get_serial_sequence('revocations', 'cursor'), v_cursor);
      new."cursor" := v_cursor;
      select a.tokens_issued, a.expires_at into v_approval from approvals a where a.id = new.approval_id;
      v_found := found;
      -- A revocation holds the approval's row lock (and an expired approval mints nothing more that
      -- outlives it): every token minted under it is committed.
      v_exp := (select max(t.exp) from issued_tokens t where t.approval_id = new.approval_id);
      if new.reason = 'expired' then
        new.needed_until := greatest(now(), v_approval.expires_at, v_exp);
      elsif not v_found or v_approval.tokens_issued = 0 then
        new.needed_until := now();
      elsif v_exp is null then
        new.needed_until := null;
      else
        new.needed_until := greatest(now(), v_exp);
      end if;
      return new;
    end
  $$`.execute(db);
}

export async function down(db: Db): Promise<void> {
  await sql`create or replace function revocations_ordered_cursor() returns trigger language plpgsql as $$
    begin
      perform pg_advisory_xact_lock(${sql.lit(REVOCATION_CURSOR_LOCK)});
      new."cursor" := nextval(pg_get_serial_sequence('revocations', 'cursor'));
      return new;
    end
  $$`.execute(db);
  await sql`create index if not exists revocations_expired_at_idx on revocations (revoked_at)
    where reason = 'expired'`.execute(db);
  await sql`drop index if exists revocations_needed_until_idx`.execute(db);
  await sql`alter table revocations drop column if exists needed_until`.execute(db);
  await sql`drop table if exists revocation_feed`.execute(db);
}
