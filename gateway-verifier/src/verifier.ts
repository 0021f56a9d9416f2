import { hash } from "node:crypto";
import { DpopChecker } from "./dpop.js";
import { type KeySource, remoteKeySource, staticKeySource } from "./jwks.js";
import {
  BASE64URL,
  checkAccessTokenHeader,
  decodeJsonObject,
  isCanonicalBase64url,
  isSupportedAlgorithm,
  type ParsedHeader,
  type SignatureCheck,
} from "./jws.js";
import { LruCache } from "./lru.js";
import { createMemoryRateLimitStore } from "./rate_limit.js";
import { REASONS, type Reason } from "./reasons.js";
import {
  pollRevocationFeed,
  RevocationList,
  type RevocationSource,
  streamRevocations,
} from "./revocation.js";
import type {
  AccessTokenClaims,
  JwsAlgorithm,
  RateDecision,
  RateLimit,
  Verifier,
  VerifierOptions,
  VerifyFailure,
  VerifyRequest,
  VerifyResult,
  VerifySuccess,
} from "./types.js";

type Scheme = "Bearer" | "DPoP";

/** What the verified-token cache keeps; everything per-request is re-checked from it. */
interface VerifiedToken {
  /** Milliseconds since the epoch: min(exp, iat + maxTokenAge) + tolerance. */
  deadlineMs: number;
  success: VerifySuccess;
  scopes: readonly string[];
  approvalId: string;
  jkt: string | undefined;
  rateKey: string;
  rateLimit: RateLimit | undefined;
}

const MAX_AUDIENCES = 64;
const MAX_ID_LENGTH = 512;
const HEADER_CACHE_SIZE = 64;
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/** An RFC 7230 quoted-string of `value` without the characters that would need escaping or break a header. */
function quoted(value: string): string {
  return `"${value.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, "")}"`;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

function positive(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value > 0;
}

function validateOptions(options: VerifierOptions): void {
  const problems: string[] = [];
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
    ["revocation.intervalMs", options.revocation?.intervalMs],
    ["revocation.maxStalenessMs", options.revocation?.maxStalenessMs],
    ["dpop.maxProofAgeSeconds", options.dpop?.maxProofAgeSeconds],
  ];
  for (const [name, value] of positives) {
    if (value !== undefined && !positive(value)) problems.push(`${name}: must be a finite number > 0`);
  }
  if (options.rateLimit !== undefined && options.rateLimit !== false) {
    if (!positive(options.rateLimit.perSecond)) problems.push("rateLimit.perSecond: must be > 0");
    if (!positive(options.rateLimit.burst) || options.rateLimit.burst < 1)
      problems.push("rateLimit.burst: must be ≥ 1");
  }
  const mode = options.signatureVerification;
  if (mode !== undefined && mode !== "threadpool" && mode !== "inline") {
    problems.push('signatureVerification: must be "threadpool" or "inline"');
  }
  if (options.revocation !== undefined && !URL.canParse(options.revocation.url)) {
    problems.push("revocation.url: must be an absolute URL");
  }
  if (problems.length > 0) throw new TypeError(`createVerifier: invalid options: ${problems.join("; ")}`);
}

/**
 * Creates a gateway verifier (CONTRACT §6). Checks run in a fixed order, signature first:
 * size and shape → `alg` allow-list → key-bearing headers, `b64`, `crit` → `typ` → signature (JWKS) →
 * `iss` → `aud` → `exp`/`nbf`/`iat` → staleness → `approval_id` → `sub`/`client_id` → `act` depth →
 * revocation → required scopes → DPoP → rate and burst.
 *
 * @throws TypeError naming every invalid option.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  validateOptions(options);
  const issuer = options.issuer;
  const audiences = new Set(typeof options.audience === "string" ? [options.audience] : options.audience);
  const soleAudience = audiences.size === 1 ? [...audiences][0] : undefined;
  const algorithms: readonly JwsAlgorithm[] = options.algorithms ?? ["ES256"];
  const allowedAlgorithms: ReadonlySet<string> = new Set(algorithms);
  const toleranceMs = (options.clockToleranceSeconds ?? 5) * 1000;
  const maxAgeMs = (options.maxTokenAgeSeconds ?? 300) * 1000;
  const maxTokenBytes = options.maxTokenBytes ?? 8192;
  const maxActDepth = options.maxActDepth ?? 5;
  const gatewayLimit = options.rateLimit;
  const now = options.now ?? Date.now;
  const realm = options.realm === undefined ? "" : `realm=${quoted(options.realm)}, `;
  const onBackgroundError = options.onBackgroundError ?? (() => undefined);

  const cache =
    options.cache === false
      ? undefined
      : new LruCache<string, VerifiedToken>(options.cache?.maxEntries ?? 10_000);
  const headers = new Map<string, ParsedHeader>();
  let lastHeaderSegment = "";
  let lastHeader: ParsedHeader | undefined;
  // The key check for `lastHeader` under JWKS version `lastCheckVersion`.
  let lastCheck: SignatureCheck | undefined;
  let lastCheckVersion = -1;

  const keys: KeySource =
    options.jwks !== undefined
      ? staticKeySource(options.jwks, algorithms)
      : remoteKeySource(
          options.jwksUri ?? `${issuer.replace(/\/+$/, "")}/jwks`,
          algorithms,
          options.jwksOptions ?? {},
          () => cache?.clear(),
          (error) => onBackgroundError(error, "jwks"),
        );

  let revocations: RevocationList | undefined;
  let revocationSource: RevocationSource | undefined;
  let revocationStream: { close(): void } | undefined;
  let maxStalenessMs = Number.POSITIVE_INFINITY;
  if (options.revocation !== undefined) {
    const intervalMs = options.revocation.intervalMs ?? 5_000;
    maxStalenessMs = options.revocation.maxStalenessMs ?? Math.max(30_000, 6 * intervalMs);
    revocations = new RevocationList(maxAgeMs + toleranceMs, options.revocation.maxEntries ?? 1_000_000);
    revocationSource = pollRevocationFeed(revocations, options.revocation, now, (error) =>
      onBackgroundError(error, "revocation"),
    );
    if (options.revocation.stream === true) {
      revocationStream = streamRevocations(revocations, options.revocation.url, now, (error) =>
        onBackgroundError(error, "revocation"),
      );
    }
  }

  const ownsRateStore = options.rateLimitStore === undefined;
  const rateStore = options.rateLimitStore ?? createMemoryRateLimitStore();
  const dpop = new DpopChecker(options.dpop ?? {}, toleranceMs / 1000);
  const dpopAlgs = `algs=${quoted(dpop.algorithms.join(" "))}`;

  // Refusals are precomputed and frozen: building them costs nothing under attack.
  const failures = new Map<string, VerifyFailure>();
  function challenge(reason: Reason, scheme: Scheme, scope?: string): string | undefined {
    const { status, error, description } = REASONS[reason];
    if (status === 429 || status === 503) return undefined;
    if (reason === "missing_token")
      return `Bearer${realm === "" ? "" : ` ${realm.slice(0, -2)}`}, DPoP ${dpopAlgs}`;
    let value = `${scheme} ${realm}error=${quoted(error)}, error_description=${quoted(description)}`;
    if (scope !== undefined) value += `, scope=${quoted(scope)}`;
    if (scheme === "DPoP") value += `, ${dpopAlgs}`;
    return value;
  }
  function build(reason: Reason, scheme: Scheme, scope?: string, retryAfter?: number): VerifyFailure {
    const { status, error, description } = REASONS[reason];
    const header: VerifyFailure["headers"] = {};
    const wwwAuthenticate = challenge(reason, scheme, scope);
    if (wwwAuthenticate !== undefined) header["WWW-Authenticate"] = wwwAuthenticate;
    if (retryAfter !== undefined) header["Retry-After"] = String(retryAfter);
    return deepFreeze({ ok: false, status, error, reason, description, headers: header });
  }
  function fail(reason: Reason, scheme: Scheme): VerifyFailure {
    const id = `${reason}/${scheme}`;
    let failure = failures.get(id);
    if (failure === undefined) {
      failure = build(reason, scheme);
      failures.set(id, failure);
    }
    return failure;
  }

  function checkClaims(claims: Record<string, unknown>, nowMs: number): VerifiedToken | Reason {
    if (claims.iss !== issuer) return "invalid_issuer";
    const aud = claims.aud;
    if (typeof aud === "string") {
      if (aud !== soleAudience && !audiences.has(aud)) return "invalid_audience";
    } else if (!Array.isArray(aud) || aud.length > MAX_AUDIENCES || !aud.some((a) => audiences.has(a))) {
      return "invalid_audience";
    }
    const { exp, nbf, iat } = claims;
    if (typeof exp !== "number" || !Number.isFinite(exp)) return "missing_claim";
    if (nowMs >= exp * 1000 + toleranceMs) return "token_expired";
    if (nbf !== undefined) {
      if (typeof nbf !== "number" || !Number.isFinite(nbf)) return "invalid_claim";
      if (nbf * 1000 > nowMs + toleranceMs) return "token_not_yet_valid";
    }
    if (typeof iat !== "number" || !Number.isFinite(iat)) return "missing_claim";
    if (iat * 1000 > nowMs + toleranceMs) return "iat_in_future";
    if (nowMs - iat * 1000 > maxAgeMs + toleranceMs) return "token_stale";
    const approvalId = claims.approval_id;
    if (typeof approvalId !== "string" || approvalId === "" || approvalId.length > MAX_ID_LENGTH) {
      return "missing_approval_id";
    }
    const { sub, client_id: clientId } = claims;
    if (typeof sub !== "string" || sub === "" || typeof clientId !== "string" || clientId === "") {
      return "missing_claim";
    }
    let actor = claims.act;
    for (let depth = 1; actor !== undefined; depth++) {
      if (typeof actor !== "object" || actor === null || Array.isArray(actor)) return "invalid_act";
      if (typeof (actor as { sub?: unknown }).sub !== "string") return "invalid_act";
      if (depth > maxActDepth) return "act_too_deep";
      actor = (actor as { act?: unknown }).act;
    }
    const scope = claims.scope;
    if (scope !== undefined && typeof scope !== "string") return "invalid_claim";
    let scopes = scope === undefined || scope === "" ? [] : scope.split(" ");
    if (scopes.includes("")) scopes = scopes.filter((s) => s !== "");
    let rateLimit: RateLimit | undefined;
    const tokenLimit = claims.rate_limit;
    if (tokenLimit !== undefined) {
      if (typeof tokenLimit !== "object" || tokenLimit === null) return "invalid_claim";
      const { per_second: perSecond, burst } = tokenLimit as Record<string, unknown>;
      if (!positive(perSecond) || !positive(burst) || burst < 1) return "invalid_claim";
      rateLimit = { perSecond, burst: Math.floor(burst) };
    }
    if (gatewayLimit === false) rateLimit = undefined;
    else if (gatewayLimit !== undefined) {
      if (
        rateLimit === undefined ||
        (rateLimit.perSecond >= gatewayLimit.perSecond && rateLimit.burst >= gatewayLimit.burst)
      ) {
        rateLimit = gatewayLimit;
      } else if (rateLimit.perSecond > gatewayLimit.perSecond || rateLimit.burst > gatewayLimit.burst) {
        rateLimit = {
          perSecond: Math.min(rateLimit.perSecond, gatewayLimit.perSecond),
          burst: Math.min(rateLimit.burst, gatewayLimit.burst),
        };
      }
    }
    let jkt: string | undefined;
    const cnf = claims.cnf;
    if (cnf !== undefined) {
      // Only DPoP binding (RFC 9449 §6) can be checked here; any other confirmation method fails closed.
      const bound =
        typeof cnf === "object" && cnf !== null ? (cnf as Record<string, unknown>).jkt : undefined;
      if (typeof bound !== "string" || bound === "" || Object.keys(cnf as object).length !== 1) {
        return "invalid_claim";
      }
      jkt = bound;
    }
    const success: VerifySuccess = {
      ok: true,
      claims: claims as Readonly<AccessTokenClaims>,
      clientId,
      approvalId,
      subject: sub,
      scopes,
    };
    return {
      deadlineMs: Math.min(exp * 1000, iat * 1000 + maxAgeMs) + toleranceMs,
      success,
      scopes,
      approvalId,
      jkt,
      rateKey: `${clientId.length}:${clientId}${approvalId}`,
      rateLimit,
    };
  }

  // Inline, verification is synchronous: one pair of scratch buffers per verifier holds the signing
  // input and signature instead of two allocations per token. The payload scratch is only ever read
  // synchronously (decoded into a string at once), so both modes share it.
  const inputScratch = Buffer.allocUnsafe(maxTokenBytes);
  const signatureScratch = Buffer.allocUnsafe(2048);
  const payloadScratch = Buffer.allocUnsafe(maxTokenBytes);

  function checkSignatureInline(
    token: string,
    firstDot: number,
    lastDot: number,
    check: SignatureCheck,
    nowMs: number,
  ): VerifiedToken | Reason {
    const signatureSegment = token.slice(lastDot + 1);
    const signature =
      signatureSegment.length <= 2700
        ? signatureScratch.subarray(0, signatureScratch.write(signatureSegment, "base64url"))
        : Buffer.from(signatureSegment, "base64url");
    // The payload is decoded before the signature check (it is faster while the token is in cache) but
    // nothing acts on it, nor reports a problem with it, until the signature has verified.
    const claims = parsePayload(token.slice(firstDot + 1, lastDot));
    const input = inputScratch.subarray(0, inputScratch.write(token, 0, lastDot, "latin1"));
    if (!check.inline(input, signature)) return "invalid_signature";
    if (claims === undefined) return "malformed_token";
    return checkClaims(claims, nowMs);
  }

  function checkSignatureOnThreadPool(
    token: string,
    firstDot: number,
    lastDot: number,
    check: SignatureCheck,
    nowMs: number,
  ): Promise<VerifiedToken | Reason> {
    // Buffers of its own: the verification outlives this call while others start.
    const signature = Buffer.from(token.slice(lastDot + 1), "base64url");
    const input = Buffer.allocUnsafe(lastDot);
    input.write(token, 0, lastDot, "latin1");
    // Decoded now, as inline; nothing acts on the claims until the signature has verified.
    const claims = parsePayload(token.slice(firstDot + 1, lastDot));
    return new Promise((resolve, reject) => {
      check.threadpool(input, signature, (error, valid) => {
        if (error !== null) reject(error);
        else if (!valid) resolve("invalid_signature");
        else if (claims === undefined) resolve("malformed_token");
        else {
          try {
            resolve(checkClaims(claims, nowMs));
          } catch (thrown) {
            reject(thrown);
          }
        }
      });
    });
  }

  const checkSignature: (
    token: string,
    firstDot: number,
    lastDot: number,
    check: SignatureCheck,
    nowMs: number,
  ) => VerifiedToken | Reason | Promise<VerifiedToken | Reason> =
    options.signatureVerification === "inline" ? checkSignatureInline : checkSignatureOnThreadPool;

  function parsePayload(segment: string): Record<string, unknown> | undefined {
    if (segment.length > maxTokenBytes) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(payloadScratch.toString("utf8", 0, payloadScratch.write(segment, "base64url")));
    } catch {
      return undefined;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
    return value as Record<string, unknown>;
  }

  async function checkWithFreshKeys(
    token: string,
    firstDot: number,
    lastDot: number,
    header: ParsedHeader,
    nowMs: number,
  ): Promise<VerifiedToken | Reason> {
    await keys.settled();
    let check = keys.lookup(header.kid, header.alg);
    if (check === undefined) {
      // Unknown kid: one refetch (cooldown-limited), then refuse.
      const fetched = await keys.refresh();
      check = keys.lookup(header.kid, header.alg);
      if (check === undefined) return keys.loaded && fetched ? "unknown_kid" : "jwks_unavailable";
    }
    return checkSignature(token, firstDot, lastDot, check, nowMs);
  }

  function checkToken(
    token: string,
    nowMs: number,
  ): VerifiedToken | Reason | Promise<VerifiedToken | Reason> {
    const firstDot = token.indexOf(".");
    const lastDot = token.lastIndexOf(".");
    // The signing input is written as latin1 (one byte per character), so a character outside ASCII
    // (e.g. a payload character re-spelled as itself + 0x100) could sign the same bytes as another
    // string: a token must be ASCII, checked on every token (UTF-8 length = length). With that, the
    // header and payload are covered byte for byte by the signature; the header's alphabet is also
    // checked when it is first seen, the signature's here.
    if (firstDot <= 0 || token.indexOf(".", firstDot + 1) !== lastDot || lastDot === firstDot + 1) {
      return "malformed_token";
    }
    const signatureSegment = token.slice(lastDot + 1);
    if (!BASE64URL.test(signatureSegment) || Buffer.byteLength(token, "utf8") !== token.length) {
      return "malformed_token";
    }
    // One signature, one spelling: a re-spelled signature (non-zero unused trailing bits decode to the
    // same bytes) would otherwise be a different token string for the same token (RFC 4648 §3.5).
    if (!isCanonicalBase64url(signatureSegment)) return "invalid_signature";
    // Tokens from one STS key share one header: compare with the last one before hashing a slice.
    let header: ParsedHeader | undefined;
    if (firstDot === lastHeaderSegment.length && token.startsWith(lastHeaderSegment)) header = lastHeader;
    const headerSegment = header === undefined ? token.slice(0, firstDot) : lastHeaderSegment;
    header ??= headers.get(headerSegment);
    if (header === undefined) {
      if (!BASE64URL.test(headerSegment)) return "malformed_token";
      const decoded = decodeJsonObject(headerSegment);
      if (decoded === undefined) return "malformed_token";
      const checked = checkAccessTokenHeader(decoded, allowedAlgorithms);
      if (typeof checked === "string") return checked;
      header = checked;
      if (headers.size >= HEADER_CACHE_SIZE) headers.clear();
      headers.set(headerSegment, header);
    }
    let check: SignatureCheck | undefined;
    if (header === lastHeader && lastCheckVersion === keys.version) check = lastCheck;
    else {
      check = keys.lookup(header.kid, header.alg);
      lastHeaderSegment = headerSegment;
      lastHeader = header;
      lastCheck = check;
      lastCheckVersion = keys.version;
    }
    if (check === undefined) return checkWithFreshKeys(token, firstDot, lastDot, header, nowMs);
    return checkSignature(token, firstDot, lastDot, check, nowMs);
  }

  function rateDecision(decision: RateDecision, token: VerifiedToken, scheme: Scheme): VerifyResult {
    if (decision.allowed) return token.success;
    return build("rate_limited", scheme, undefined, decision.retryAfterSeconds);
  }

  function perRequest(
    token: VerifiedToken,
    request: VerifyRequest,
    accessToken: string,
    dpopScheme: boolean,
    nowMs: number,
  ): VerifyResult | Promise<VerifyResult> {
    const scheme: Scheme = token.jkt !== undefined || dpopScheme ? "DPoP" : "Bearer";
    if (revocations !== undefined && revocationSource !== undefined) {
      if (!revocations.attempted) {
        return revocationSource.initial.then(() =>
          perRequest(token, request, accessToken, dpopScheme, nowMs),
        );
      }
      if (nowMs - revocations.syncedAt > maxStalenessMs) return fail("revocation_unavailable", scheme);
      if (revocations.has(token.approvalId)) return fail("approval_revoked", scheme);
    }
    const required = request.requiredScopes;
    if (required !== undefined) {
      for (const scope of required) {
        if (!token.scopes.includes(scope)) {
          const listed = required.filter((s) => SCOPE_TOKEN.test(s)).join(" ");
          return build("insufficient_scope", scheme, listed === "" ? undefined : listed);
        }
      }
    }
    if (token.jkt !== undefined) {
      if (!dpopScheme) return fail("dpop_bound_token_as_bearer", "DPoP");
      const problem = dpop.check({
        proof: request.dpop,
        accessToken,
        jkt: token.jkt,
        method: request.method ?? "GET",
        url: request.url,
        nowMs,
      });
      if (problem !== undefined) return fail(problem, "DPoP");
    } else if (dpopScheme) {
      return fail("token_not_dpop_bound", "DPoP");
    }
    if (token.rateLimit === undefined) return token.success;
    let decision: RateDecision | Promise<RateDecision>;
    try {
      decision = rateStore.consume(token.rateKey, token.rateLimit, nowMs);
    } catch {
      return fail("rate_limit_unavailable", scheme);
    }
    if (decision instanceof Promise) {
      return decision.then(
        (settled) => rateDecision(settled, token, scheme),
        () => fail("rate_limit_unavailable", scheme),
      );
    }
    return rateDecision(decision, token, scheme);
  }

  function afterToken(
    outcome: VerifiedToken | Reason,
    cacheKey: string | undefined,
    request: VerifyRequest,
    accessToken: string,
    dpopScheme: boolean,
    nowMs: number,
  ): VerifyResult | Promise<VerifyResult> {
    if (typeof outcome === "string") {
      // Before the claims are known only the request's scheme tells which challenge to send.
      return fail(outcome, dpopScheme ? "DPoP" : "Bearer");
    }
    if (cacheKey !== undefined && cache !== undefined) {
      // A cached result is shared by every request presenting the token: freeze it deeply.
      deepFreeze(outcome.success);
      cache.set(cacheKey, outcome);
    }
    return perRequest(outcome, request, accessToken, dpopScheme, nowMs);
  }

  function run(request: VerifyRequest): VerifyResult | Promise<VerifyResult> {
    const authorization = request.authorization;
    if (authorization === undefined || authorization === "") return fail("missing_token", "Bearer");
    if (authorization.length > maxTokenBytes + 64) return fail("token_too_large", "Bearer");
    let token: string;
    let dpopScheme: boolean;
    if (authorization.startsWith("Bearer ")) {
      token = authorization.slice(7);
      dpopScheme = false;
    } else {
      const space = authorization.indexOf(" ");
      const scheme = (space < 0 ? authorization : authorization.slice(0, space)).toLowerCase();
      if (scheme !== "bearer" && scheme !== "dpop") return fail("missing_token", "Bearer");
      if (space < 0) return fail("malformed_authorization", "Bearer");
      token = authorization.slice(space + 1);
      dpopScheme = scheme === "dpop";
    }
    const scheme: Scheme = dpopScheme ? "DPoP" : "Bearer";
    if (token.charCodeAt(0) === 32 || token.charCodeAt(token.length - 1) === 32) token = token.trim();
    if (token === "") return fail("malformed_authorization", scheme);
    if (token.length > maxTokenBytes) return fail("token_too_large", scheme);
    const nowMs = now();
    let cacheKey: string | undefined;
    if (cache !== undefined) {
      cacheKey = hash("sha256", token, "base64");
      const hit = cache.get(cacheKey);
      if (hit !== undefined) {
        if (nowMs < hit.deadlineMs) return perRequest(hit, request, token, dpopScheme, nowMs);
        cache.delete(cacheKey);
      }
    }
    const outcome = checkToken(token, nowMs);
    if (outcome instanceof Promise) {
      return outcome.then((settled) => afterToken(settled, cacheKey, request, token, dpopScheme, nowMs));
    }
    return afterToken(outcome, cacheKey, request, token, dpopScheme, nowMs);
  }

  return {
    verify(request) {
      try {
        const result = run(request);
        return result instanceof Promise
          ? result.catch(() => fail("malformed_token", "Bearer"))
          : Promise.resolve(result);
      } catch {
        return Promise.resolve(fail("malformed_token", "Bearer"));
      }
    },
    async ready() {
      await keys.settled();
      await revocationSource?.initial;
    },
    close() {
      keys.close();
      revocationSource?.close();
      revocationStream?.close();
      if (ownsRateStore) rateStore.close?.();
    },
  };
}
