import { isPositiveNumber } from "./access_token_claims.js";
import { isSupportedAlgorithm } from "./jws.js";
import type { VerifierOptions } from "./types.js";

/**
 * Checks the options of `createVerifier` before anything starts.
 *
 * @throws TypeError naming every invalid option.
 */
export function validateOptions(options: VerifierOptions): void {
  const problems: string[] = [];
  const revocation = options.revocation === false ? undefined : options.revocation;
  if (typeof options.issuer !== "string" || options.issuer === "") problems.push("issuer: required string");
  const audiences = typeof options.audience === "string" ? [options.audience] : options.audience;
  if (
    !Array.isArray(audiences) ||
    audiences.length === 0 ||
    audiences.some((a) => typeof a !== "string" || a === "")
  ) {
    problems.push("audience: required string or non-empty string array");
  }
  if (options.jwks !== undefined && options.jwksUri !== undefined)
    problems.push("jwks, jwksUri: give one of them");
  if (options.jwks !== undefined && !Array.isArray(options.jwks?.keys))
    problems.push("jwks: needs a keys array");
  for (const alg of options.algorithms ?? ["ES256"]) {
    if (!isSupportedAlgorithm(alg))
      problems.push(`algorithms: ${String(alg)} is not allowed (never none or HMAC)`);
  }
  if ((options.algorithms ?? ["ES256"]).length === 0) problems.push("algorithms: must not be empty");
  const nonNegative: [string, number | undefined][] = [
    ["clockToleranceSeconds", options.clockToleranceSeconds],
    ["maxActDepth", options.maxActDepth],
  ];
  for (const [name, value] of nonNegative) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) problems.push(`${name}: must be ≥ 0`);
  }
  const positives: [string, number | undefined][] = [
    ["maxTokenAgeSeconds", options.maxTokenAgeSeconds],
    ["maxTokenBytes", options.maxTokenBytes],
    ["revocation.intervalMs", revocation?.intervalMs],
    ["revocation.maxStalenessMs", revocation?.maxStalenessMs],
    ["readyTimeoutMs", options.readyTimeoutMs],
    ["dpop.maxProofAgeSeconds", options.dpop?.maxProofAgeSeconds],
  ];
  for (const [name, value] of positives) {
    if (value !== undefined && !isPositiveNumber(value))
      problems.push(`${name}: must be a finite number > 0`);
  }
  const counts: [string, number | undefined][] = [
    ["dpop.replayCacheSize", options.dpop?.replayCacheSize],
    ["dpop.replayCachePerClient", options.dpop?.replayCachePerClient],
  ];
  for (const [name, value] of counts) {
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 1))
      problems.push(`${name}: must be an integer ≥ 1`);
  }
  if (options.rateLimit !== undefined && options.rateLimit !== false) {
    if (!isPositiveNumber(options.rateLimit.perSecond)) problems.push("rateLimit.perSecond: must be > 0");
    if (!isPositiveNumber(options.rateLimit.burst) || options.rateLimit.burst < 1)
      problems.push("rateLimit.burst: must be ≥ 1");
  }
  const mode = options.signatureVerification;
  if (mode !== undefined && mode !== "threadpool" && mode !== "inline") {
    problems.push('signatureVerification: must be "threadpool" or "inline"');
  }
  if (
    options.tracer !== undefined &&
    typeof (options.tracer as { startSpan?: unknown } | null)?.startSpan !== "function"
  ) {
    problems.push("tracer: must be an OpenTelemetry Tracer (with startSpan)");
  }
  if (revocation !== undefined && !URL.canParse(revocation.url)) {
    problems.push("revocation.url: must be an absolute URL");
  }
  if (problems.length > 0) throw new TypeError(`createVerifier: invalid options: ${problems.join("; ")}`);
}
