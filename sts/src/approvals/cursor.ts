import type { Approval } from "../db/schema.js";
import { invalidRequest } from "./errors.js";
import { APPROVAL_ID_PATTERN } from "./model.js";
import type { ListedPendingApproval, ListPosition, PendingPosition } from "./repository.js";

/**
 * The earliest and latest time a cursor may hold: years 1 to 9999, where every engine agrees.
 * Postgres stores 4713 BC to 294276 AD, but PGlite sends a `Date` as ISO 8601, whose years past 9999
 * (`+010000-…`) and before 1 (`0000-…`, `-000001-…`) Postgres refuses; outside this range the query
 * would fail with a 500 instead of a 400.
 */
const CURSOR_EARLIEST = Date.parse("0001-01-01T00:00:00.000Z");
const CURSOR_LATEST = Date.parse("9999-12-31T23:59:59.999Z");

/**
 * How long a pending list's cursor is good for, in milliseconds (1 hour): its later pages count back the
 * approvals decided since its snapshot, so an old snapshot would make every page read a long history.
 */
export const PENDING_CURSOR_MAX_AGE_MS = 3_600_000;
/** How far ahead of this instance's clock a snapshot may be (the database's clock may run ahead). */
const SNAPSHOT_SKEW_MS = 300_000;

function encode(value: unknown[]): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** `[created_at, id]`: the position after `approval` in a list other than pending. */
export function encodeCursor(approval: Approval): string {
  return encode([approval.created_at.toISOString(), approval.id]);
}

/** `[snapshot, round, created_at, id]`: the position after `approval` in a pending list. */
export function encodePendingCursor(approval: ListedPendingApproval): string {
  return encode([
    approval.snapshot.toISOString(),
    approval.round,
    approval.created_at.toISOString(),
    approval.id,
  ]);
}

function notACursor() {
  return invalidRequest("cursor: is not a cursor this API returned", "cursor_invalid");
}

function parse(cursor: string, length: number): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw notACursor();
  }
  if (!Array.isArray(value) || value.length !== length) throw notACursor();
  return value;
}

/** Exactly what `toISOString` writes, within the range the database takes. */
function time(value: unknown): Date {
  if (typeof value !== "string") throw notACursor();
  const ms = Date.parse(value);
  if (!(ms >= CURSOR_EARLIEST && ms <= CURSOR_LATEST) || new Date(ms).toISOString() !== value) {
    throw notACursor();
  }
  return new Date(ms);
}

function approvalId(value: unknown): string {
  if (typeof value !== "string" || !APPROVAL_ID_PATTERN.test(value)) throw notACursor();
  return value;
}

/**
 * Reads a cursor of a list other than pending.
 * @throws {ApprovalError} 400 `invalid_request` (`cursor_invalid`).
 */
export function decodeCursor(cursor: string): ListPosition {
  const [createdAt, id] = parse(cursor, 2);
  return { createdAt: time(createdAt), id: approvalId(id) };
}

/**
 * Reads a cursor of a pending list; one whose snapshot is over {@link PENDING_CURSOR_MAX_AGE_MS} old is
 * refused as expired.
 * @throws {ApprovalError} 400 `invalid_request` (`cursor_invalid`).
 */
export function decodePendingCursor(cursor: string, now = Date.now()): PendingPosition {
  const [snapshot, round, createdAt, id] = parse(cursor, 4);
  if (typeof round !== "number" || !Number.isInteger(round) || round < 0 || round > 2_147_483_647) {
    throw notACursor();
  }
  const position = { snapshot: time(snapshot), round, createdAt: time(createdAt), id: approvalId(id) };
  if (position.snapshot.getTime() > now + SNAPSHOT_SKEW_MS) throw notACursor();
  if (position.snapshot.getTime() < now - PENDING_CURSOR_MAX_AGE_MS) {
    throw invalidRequest(
      "cursor: has expired (a pending list's cursor is good for an hour); list again without one",
      "cursor_invalid",
    );
  }
  return position;
}
