import { type Kysely, sql } from "kysely";

// Frozen in time: uses Kysely<any> and imports nothing from the application.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on the application's types
type Db = Kysely<any>;

/** Advisory lock key serializing partition DDL across instances ("cspt" in ASCII). */
const PARTITION_LOCK = 0x63737074;

/** Days of daily partitions this migration creates, from today (UTC). The retention job keeps ahead. */
const DAYS_AHEAD = 8;

/**
 * Everything that grows is bounded (retention):
 *
 * - `audit_events` and `issued_tokens` become range-partitioned by time, one partition per UTC day
 *   (`<table>_pYYYYMMDD`, `at` for audit events, `exp` for issued tokens) plus a default partition
 *   (`<table>_default`) for rows outside every daily one. Dropping a day's partition prunes it at any
 *   size. Primary keys include the partition key: (`id`, `at`) and (`jti`, `exp`). Existing rows are
 *   kept: a non-empty table becomes the partition `<table>_until_YYYYMMDD` (every row before that
 *   UTC midnight), dropped once that midnight is past retention.
 * - `countersign_ensure_partitions(parent, key, from, days, lock_timeout_ms)` creates the missing daily
 *   partitions of `days` days from `from` (rows already in the default partition for that day are
 *   moved in); `countersign_drop_partitions(parent, before, lock_timeout_ms)` drops the partitions that
 *   end at or before `before`. Both take a transaction-scoped advisory lock and return -1 without
 *   doing anything when another session holds it; a positive lock timeout bounds how long their DDL
 *   may wait for (and so hold up) writers.
 * - Refusals are counted: a row with `window_seconds` set stands for `occurrences` refusals of one
 *   (client, event, reason, approval) in the window of that many seconds starting at `at`, the last at
 *   `last_at`; `audit_events_refusal_window_key` makes that one row (an upsert).
 * - `audit_events_lifecycle_idx`: an approval's own lifecycle events, found without reading its other
 *   rows. `approvals_status_expires_idx`: approval listings by effective status.
 *   `webhook_deliveries_done_idx`: finished deliveries by the time they finished.
 */
export async function up(db: Db): Promise<void> {
  await sql`create index approvals_status_expires_idx on approvals (status, expires_at)`.execute(db);
  await sql`create index webhook_deliveries_done_idx on webhook_deliveries
    ((coalesce(delivered_at, next_attempt_at))) where status <> 'pending'`.execute(db);

  await sql`
    create function countersign_ensure_partitions(p_parent text, p_key text, p_from date, p_days integer,
      p_lock_timeout_ms integer)
    returns integer
    language plpgsql
    as $body$
    declare
      v_covered date;
      v_day date;
      v_name text;
      v_default text := p_parent || '_default';
      v_lo timestamptz;
      v_hi timestamptz;
      v_occupied boolean;
      v_created integer := 0;
    begin
      if not pg_try_advisory_xact_lock(${sql.lit(PARTITION_LOCK)}) then
        return -1;
      end if;
      if p_lock_timeout_ms > 0 then
        perform set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
      end if;
      select max(to_date(substring(c.relname from '_until_([0-9]{8})$'), 'YYYYMMDD')) into v_covered
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = p_parent::regclass;
      for k in 0 .. p_days - 1 loop
        v_day := p_from + k;
        continue when v_covered is not null and v_day < v_covered;
        v_name := p_parent || '_p' || to_char(v_day, 'YYYYMMDD');
        continue when to_regclass(v_name) is not null;
        v_lo := v_day::timestamp at time zone 'UTC';
        v_hi := (v_day + 1)::timestamp at time zone 'UTC';
        execute format('select exists (select 1 from %I where %I >= $1 and %I < $2)', v_default, p_key, p_key)
          into v_occupied using v_lo, v_hi;
        if v_occupied then
          execute format('create table %I (like %I including defaults including constraints)', v_name, p_parent);
          execute format('with moved as (delete from %I where %I >= $1 and %I < $2 returning *) '
            'insert into %I select * from moved', v_default, p_key, p_key, v_name) using v_lo, v_hi;
          execute format('alter table %I attach partition %I for values from (%L) to (%L)',
            p_parent, v_name, v_lo, v_hi);
        else
          execute format('create table %I partition of %I for values from (%L) to (%L)',
            v_name, p_parent, v_lo, v_hi);
        end if;
        v_created := v_created + 1;
      end loop;
      return v_created;
    end;
    $body$`.execute(db);

  await sql`
    create function countersign_drop_partitions(p_parent text, p_before timestamptz, p_lock_timeout_ms integer)
    returns integer
    language plpgsql
    as $body$
    declare
      v_name text;
      v_day text;
      v_upper timestamptz;
      v_dropped integer := 0;
    begin
      if not pg_try_advisory_xact_lock(${sql.lit(PARTITION_LOCK)}) then
        return -1;
      end if;
      if p_lock_timeout_ms > 0 then
        perform set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
      end if;
      for v_name in
        select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
          where i.inhparent = p_parent::regclass order by c.relname
      loop
        v_upper := null;
        v_day := substring(v_name from '^' || p_parent || '_p([0-9]{8})$');
        if v_day is not null then
          v_upper := (to_date(v_day, 'YYYYMMDD') + 1)::timestamp at time zone 'UTC';
        else
          v_day := substring(v_name from '^' || p_parent || '_until_([0-9]{8})$');
          if v_day is not null then
            v_upper := to_date(v_day, 'YYYYMMDD')::timestamp at time zone 'UTC';
          end if;
        end if;
        if v_upper is not null and v_upper <= p_before then
          execute format('drop table %I', v_name);
          v_dropped := v_dropped + 1;
        end if;
      end loop;
      return v_dropped;
    end;
    $body$`.execute(db);

  // audit_events: the same columns in the same order, then the counted-refusal columns.
  await sql`alter table audit_events rename to audit_events_unpartitioned`.execute(db);
  // Its primary key (id) gives way to the partitioned table's (id, at) when it is attached.
  await sql`alter table audit_events_unpartitioned drop constraint audit_events_pkey`.execute(db);
  await sql`alter index audit_events_approval_idx rename to audit_events_unpartitioned_approval_idx`.execute(
    db,
  );
  await sql`
    create table audit_events (
      id bigint not null default nextval('audit_events_id_seq'),
      at timestamptz not null default now(),
      event text not null,
      outcome text not null constraint audit_events_outcome_check
        check (outcome in ('granted', 'refused', 'info')),
      reason text,
      approval_id text,
      client_id text,
      actor text,
      detail jsonb,
      occurrences integer not null default 1 constraint audit_events_occurrences_check check (occurrences >= 1),
      last_at timestamptz,
      window_seconds integer constraint audit_events_window_seconds_check check (window_seconds > 0),
      primary key (id, at)
    ) partition by range (at)`.execute(db);
  await sql`alter sequence audit_events_id_seq owned by audit_events.id`.execute(db);
  await sql`create index audit_events_approval_idx on audit_events (approval_id, id)`.execute(db);
  await sql`create index audit_events_lifecycle_idx on audit_events (approval_id, id)
    where event in ('approval.requested', 'approval.approved', 'approval.denied', 'approval.revoked')
      and outcome = 'granted'`.execute(db);
  await sql`create unique index audit_events_refusal_window_key on audit_events
    (coalesce(client_id, ''), event, coalesce(reason, ''), coalesce(approval_id, ''), at)
    where window_seconds is not null`.execute(db);
  await sql`create table audit_events_default partition of audit_events default`.execute(db);
  await keepOrDrop(db, "audit_events", "at", async () => {
    await sql`alter table audit_events_unpartitioned
      add column occurrences integer not null default 1 constraint audit_events_occurrences_check
        check (occurrences >= 1),
      add column last_at timestamptz,
      add column window_seconds integer constraint audit_events_window_seconds_check
        check (window_seconds > 0)`.execute(db);
  });

  // issued_tokens
  await sql`alter table issued_tokens rename to issued_tokens_unpartitioned`.execute(db);
  await sql`alter table issued_tokens_unpartitioned drop constraint issued_tokens_pkey`.execute(db);
  await sql`alter index issued_tokens_approval_idx rename to issued_tokens_unpartitioned_approval_idx`.execute(
    db,
  );
  await sql`alter index issued_tokens_client_iat_idx rename to issued_tokens_unpartitioned_client_iat_idx`.execute(
    db,
  );
  await sql`
    create table issued_tokens (
      jti text not null,
      approval_id text not null references approvals (id),
      client_id text not null,
      sub text not null,
      aud text not null,
      scope text not null,
      jkt text,
      iat timestamptz not null,
      exp timestamptz not null,
      primary key (jti, exp)
    ) partition by range (exp)`.execute(db);
  await sql`create index issued_tokens_approval_idx on issued_tokens (approval_id)`.execute(db);
  await sql`create index issued_tokens_client_iat_idx on issued_tokens (client_id, iat)`.execute(db);
  await sql`create table issued_tokens_default partition of issued_tokens default`.execute(db);
  await keepOrDrop(db, "issued_tokens", "exp", async () => {});

  await sql`select countersign_ensure_partitions('audit_events', 'at',
    (now() at time zone 'UTC')::date, ${DAYS_AHEAD}, 0)`.execute(db);
  await sql`select countersign_ensure_partitions('issued_tokens', 'exp',
    (now() at time zone 'UTC')::date, ${DAYS_AHEAD}, 0)`.execute(db);
}

/**
 * The table as it was (`<table>_unpartitioned`): dropped when empty, otherwise (after `prepare` gives it
 * the new columns) attached as `<table>_until_YYYYMMDD`, holding every time before the UTC midnight
 * after both now and its latest row.
 */
async function keepOrDrop(db: Db, table: string, key: string, prepare: () => Promise<void>): Promise<void> {
  const old = `${table}_unpartitioned`;
  const { rows } = await sql<{ until: string | null }>`
    select to_char((greatest(max(${sql.ref(key)}), now()) at time zone 'UTC')::date + 1, 'YYYYMMDD') as until
    from ${sql.table(old)} having count(*) > 0`.execute(db);
  const until = rows[0]?.until;
  if (!until) {
    await sql`drop table ${sql.table(old)}`.execute(db);
    return;
  }
  await prepare();
  await sql`alter table ${sql.table(table)} attach partition ${sql.table(old)}
    for values from (minvalue) to (${sql.lit(`${until.slice(0, 4)}-${until.slice(4, 6)}-${until.slice(6)} 00:00:00+00`)})`.execute(
    db,
  );
  await sql`alter table ${sql.table(old)} rename to ${sql.table(`${table}_until_${until}`)}`.execute(db);
}

/** Converting the partitioned tables back is a manual operation (rows would have to be copied). */
export async function down(): Promise<void> {
  throw new Error(
    "2026_11_28_0009_retention cannot be reverted: audit_events and issued_tokens are partitioned tables now",
  );
}
