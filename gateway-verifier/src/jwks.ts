import { KeyObject } from "node:crypto";
import { importJWK, type JSONWebKeySet, type JWK } from "jose";
import { VerifierBackgroundError } from "./background_error.js";
import { fetchJson } from "./http_fetch.js";
import { ALGORITHMS, type SignatureCheck, signatureCheck } from "./jws.js";
import type { JwksOptions, JwsAlgorithm } from "./types.js";

/** The keys of one JWKS, ready to verify: kid → alg → check. Keys without `kid` live under "". */
type KeyTable = Map<string, Map<JwsAlgorithm, SignatureCheck>>;

/** Largest number of keys taken from one JWKS (bounded input). */
const MAX_KEYS = 100;

/** Imports every usable public signing key of `jwks` for the allowed algorithms (jose does the import). */
export async function importKeySet(jwks: unknown, algorithms: readonly JwsAlgorithm[]): Promise<KeyTable> {
  if (typeof jwks !== "object" || jwks === null || !Array.isArray((jwks as JSONWebKeySet).keys)) {
    throw new Error("JWKS has no keys array");
  }
  const table: KeyTable = new Map();
  for (const candidate of (jwks as JSONWebKeySet).keys.slice(0, MAX_KEYS)) {
    if (typeof candidate !== "object" || candidate === null) continue;
    const jwk = candidate as JWK;
    if (jwk.use !== undefined && jwk.use !== "sig") continue;
    if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes("verify")))
      continue;
    if (jwk.d !== undefined || jwk.k !== undefined) continue;
    const kid = typeof jwk.kid === "string" ? jwk.kid : "";
    for (const alg of algorithms) {
      if (jwk.alg !== undefined && jwk.alg !== alg) continue;
      if (ALGORITHMS[alg].kty !== jwk.kty) continue;
      let check: SignatureCheck | undefined;
      try {
        const imported = await importJWK({ ...jwk, alg, ext: true }, alg);
        if (imported instanceof Uint8Array) continue;
        check = signatureCheck(KeyObject.from(imported), alg);
      } catch {
        continue;
      }
      if (check === undefined) continue;
      let byAlg = table.get(kid);
      if (byAlg === undefined) {
        byAlg = new Map();
        table.set(kid, byAlg);
      }
      if (!byAlg.has(alg)) byAlg.set(alg, check);
    }
  }
  return table;
}

function lookupIn(table: KeyTable, kid: string | undefined, alg: JwsAlgorithm): SignatureCheck | undefined {
  if (kid !== undefined) return table.get(kid)?.get(alg);
  let found: SignatureCheck | undefined;
  for (const byAlg of table.values()) {
    const check = byAlg.get(alg);
    if (check === undefined) continue;
    if (found !== undefined) return undefined;
    found = check;
  }
  return found;
}

/** Source of verification keys. `lookup` is synchronous for the hot path. */
export interface KeySource {
  /** The check for (kid, alg), if currently known. A token without `kid` matches only a sole candidate. */
  lookup(kid: string | undefined, alg: JwsAlgorithm): SignatureCheck | undefined;
  /** Whether any key set has been loaded. */
  readonly loaded: boolean;
  /** Changes whenever the key set is replaced (callers may cache lookups per version). */
  readonly version: number;
  /** Resolves when the fetch in flight (if any) has finished. */
  settled(): Promise<void>;
  /**
   * Fetch again (coalesced, respecting the cooldown: waits for the next allowed fetch).
   * Resolves true when a fetch that started after this call succeeded.
   */
  refresh(): Promise<boolean>;
  close(): void;
}

/** A fixed JWKS given in the options. */
export function staticKeySource(
  jwks: JSONWebKeySet,
  algorithms: readonly JwsAlgorithm[],
): KeySource & { readonly initial: Promise<void> } {
  let table: KeyTable = new Map();
  let loaded = false;
  let version = 0;
  const initial = importKeySet(jwks, algorithms).then(
    (imported) => {
      table = imported;
      loaded = true;
      version++;
    },
    () => undefined,
  );
  return {
    lookup: (kid, alg) => lookupIn(table, kid, alg),
    get loaded() {
      return loaded;
    },
    get version() {
      return version;
    },
    initial,
    settled: () => initial,
    refresh: () => initial.then(() => loaded),
    close() {},
  };
}

/**
 * A remote JWKS with caching: background refresh after `cacheMaxAgeMs`, refetch on unknown `kid`
 * limited to one fetch per `cooldownMs`, stale keys kept when a refresh fails (they were published by
 * the issuer), `onKeysRemoved` when a refresh drops a key, and `onError` (which must not throw) with
 * every failed fetch.
 */
export function remoteKeySource(
  uri: string,
  algorithms: readonly JwsAlgorithm[],
  options: JwksOptions,
  onKeysRemoved: () => void,
  onError: (error: VerifierBackgroundError) => void,
): KeySource {
  const cacheMaxAgeMs = options.cacheMaxAgeMs ?? 300_000;
  const cooldownMs = options.cooldownMs ?? 1_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const maxBytes = options.maxResponseBytes ?? 512 * 1024;
  let table: KeyTable = new Map();
  let loaded = false;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let lastStart = Number.NEGATIVE_INFINITY;
  let inflight: Promise<boolean> | undefined;
  let version = 0;
  const clock = () => performance.now();

  async function fetchOnce(): Promise<boolean> {
    lastStart = clock();
    try {
      const next = await importKeySet(await fetchJson(uri, timeoutMs, maxBytes), algorithms);
      let removed = false;
      for (const [kid, byAlg] of table) {
        const after = next.get(kid);
        for (const alg of byAlg.keys()) if (after?.has(alg) !== true) removed = true;
      }
      table = next;
      loaded = true;
      version++;
      fetchedAt = clock();
      if (removed) onKeysRemoved();
      return true;
    } catch (error) {
      onError(VerifierBackgroundError.from("jwks_fetch_failed", "jwks", error));
      return false;
    }
  }

  function refresh(): Promise<boolean> {
    if (inflight !== undefined) {
      // A fetch already running may have started before the caller saw its unknown kid: chain one more.
      const running = inflight;
      return running.then(() => (inflight === undefined ? refresh() : inflight));
    }
    const wait = Math.max(0, lastStart + cooldownMs - clock());
    const started = wait === 0 ? fetchOnce() : new Promise<void>((r) => setTimeout(r, wait)).then(fetchOnce);
    const current = started.finally(() => {
      if (inflight === current) inflight = undefined;
    });
    inflight = current;
    return current;
  }

  void refresh();
  // Background refresh every cacheMaxAgeMs (a failed refresh keeps the current keys).
  const timer = setInterval(
    () => {
      if (inflight === undefined && clock() - fetchedAt >= cacheMaxAgeMs) void refresh();
    },
    Math.max(cooldownMs, Math.min(cacheMaxAgeMs, 60_000)),
  );
  timer.unref();

  return {
    lookup: (kid, alg) => lookupIn(table, kid, alg),
    get loaded() {
      return loaded;
    },
    get version() {
      return version;
    },
    settled: () => (inflight === undefined ? Promise.resolve() : inflight.then(() => undefined)),
    refresh,
    close() {
      clearInterval(timer);
    },
  };
}
