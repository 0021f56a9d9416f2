/**
 * How many cases a property runs: a bounded number by default so `npm test` stays fast, many more when
 * `COUNTERSIGN_LONG_TESTS=1` (CI sets it). `FAST_CHECK_SEED` replays a failing run.
 */
export function propertyRuns(defaultRuns: number, longRuns: number): { numRuns: number; seed?: number } {
  const numRuns = process.env.COUNTERSIGN_LONG_TESTS === "1" ? longRuns : defaultRuns;
  const seed = process.env.FAST_CHECK_SEED;
  return seed === undefined ? { numRuns } : { numRuns, seed: Number(seed) };
}

/** Decodes a JWT's payload without verifying it (the test verifies separately where it matters). */
export function decodePayload(token: string): Record<string, unknown> {
  const payload = token.split(".")[1] ?? "";
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
}
