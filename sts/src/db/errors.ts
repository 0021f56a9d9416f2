/**
 * True when `error` means the database is unreachable or unusable right now (as opposed to a bug or a
 * constraint violation). Such errors fail closed as 503 `temporarily_unavailable`.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") {
    // SQLSTATE class 08 (connection exception), 57P0x (operator intervention, e.g. shutdown),
    // 53xxx (insufficient resources), 40001/40P01 are not here: those are retried by callers.
    if (/^08/.test(code) || /^57P0/.test(code) || /^53/.test(code) || code === "57014") return true;
    if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH"].includes(code))
      return true;
  }
  const message = error.message;
  if (
    /Connection terminated|timeout exceeded when trying to connect|Query read timeout|connect ECONNREFUSED|Client has encountered a connection error|PGlite is closed|driver has already been destroyed|Cannot use a pool after calling end/i.test(
      message,
    )
  ) {
    return true;
  }
  const cause = (error as { cause?: unknown }).cause;
  if (cause && cause !== error) return isDatabaseUnavailable(cause);
  if (error instanceof AggregateError) return error.errors.some(isDatabaseUnavailable);
  return false;
}
