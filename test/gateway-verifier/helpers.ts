import { KeyObject, randomUUID, sign, type webcrypto } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import {
  createVerifier as createGatewayVerifier,
  type Verifier,
  type VerifierOptions,
} from "../../gateway-verifier/src/index.js";

export const ISSUER = "http://127.0.0.1:8080";
export const AUDIENCE = "https://crm.example.test";
/** A frozen clock: 2030-01-01T00:00:00Z, in milliseconds. */
export const NOW_MS = Date.UTC(2030, 0, 1);
export const NOW = NOW_MS / 1000;

/**
 * `createVerifier` for the suites: `VERIFIER_SIGNATURE_VERIFICATION=inline` (or `threadpool`) in the
 * environment sets `signatureVerification` wherever a test leaves it unset, so every suite can be run
 * in both modes. Unset: the verifier's default.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  const mode = process.env.VERIFIER_SIGNATURE_VERIFICATION;
  if (mode === undefined || mode === "" || options.signatureVerification !== undefined) {
    return createGatewayVerifier(options);
  }
  if (mode !== "inline" && mode !== "threadpool") {
    throw new Error(`VERIFIER_SIGNATURE_VERIFICATION must be inline or threadpool, not ${mode}`);
  }
  return createGatewayVerifier({ ...options, signatureVerification: mode });
}

export interface SigningKey {
  kid: string;
  privateKey: webcrypto.CryptoKey;
  privateKeyObject: KeyObject;
  publicJwk: JWK;
}

export async function generateSigningKey(kid: string = randomUUID()): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  return { kid, privateKey, privateKeyObject: KeyObject.from(privateKey), publicJwk };
}

/** Claims of a valid Countersign access token at `now` (seconds). */
export function accessTokenClaims(now: number = NOW, overrides: Record<string, unknown> = {}) {
  return {
    iss: ISSUER,
    sub: "alice",
    aud: AUDIENCE,
    client_id: "billing-agent",
    scope: "crm:read crm:write",
    iat: now,
    exp: now + 300,
    jti: randomUUID(),
    approval_id: "appr_123",
    authorization_details: [{ type: "agent_task", approval_id: "appr_123", task: "reconcile invoices" }],
    ...overrides,
  };
}

/** Signs with jose, like the STS: `{alg: ES256, typ: at+jwt, kid}`. */
export async function mintToken(
  key: SigningKey,
  claims: Record<string, unknown> = accessTokenClaims(),
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", typ: "at+jwt", kid: key.kid, ...header })
    .sign(key.privateKey);
}

export function b64url(value: unknown): string {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

/** Builds a compact JWS by hand (for headers jose refuses to produce), ES256-signed unless `signature` given. */
export function rawToken(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  key?: SigningKey,
  signature?: Buffer,
): string {
  const input = `${b64url(header)}.${b64url(claims)}`;
  const sig =
    signature ??
    (key === undefined
      ? Buffer.alloc(0)
      : sign("sha256", Buffer.from(input), { key: key.privateKeyObject, dsaEncoding: "ieee-p1363" }));
  return `${input}.${sig.toString("base64url")}`;
}

export interface TestServer {
  url: string;
  /** Paths (with query) of every request received, in order. */
  requests: string[];
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A server on 127.0.0.1, on `port` (default: any free one). */
export async function startServer(handler: Handler, port = 0): Promise<TestServer & { server: Server }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? "");
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const { port: bound } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${bound}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export interface RevocationFeedEntry {
  approval_id: string;
  revoked_at: string;
  cursor: string;
}

/**
 * A fake STS: `GET /jwks` serves `keys`, `GET /revocations?after=` serves `revocations` (docs/reference.md#the-revocation-feed,
 * two per page to exercise paging). On `port` when given (e.g. one a verifier already points at).
 */
export async function startFakeSts(initialKeys: JWK[] = [], port = 0) {
  const state = {
    keys: initialKeys,
    revocations: [] as RevocationFeedEntry[],
    jwksDown: false,
    feedDown: false,
  };
  const server = await startServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/jwks") {
      if (state.jwksDown) return sendJson(res, 500, { error: "down" });
      return sendJson(res, 200, { keys: state.keys });
    }
    if (url.pathname === "/revocations") {
      if (state.feedDown) return sendJson(res, 503, { error: "temporarily_unavailable" });
      const after = url.searchParams.get("after");
      const start = after === null ? 0 : state.revocations.findIndex((r) => r.cursor === after) + 1;
      const page = state.revocations.slice(start, start + 2);
      const cursor = page.at(-1)?.cursor ?? after ?? "0";
      return sendJson(res, 200, { revocations: page, cursor });
    }
    sendJson(res, 404, { error: "not_found" });
  }, port);
  return {
    ...server,
    state,
    revoke(approvalId: string, revokedAt: string = new Date(NOW_MS).toISOString()) {
      state.revocations.push({
        approval_id: approvalId,
        revoked_at: revokedAt,
        cursor: String(state.revocations.length + 1),
      });
    },
    /**
     * Waits until a verifier polling this feed holds every entry revoked so far: it asks for the feed
     * after the last entry's cursor only once it has applied the pages up to it. Bounded (10 s) for the
     * run, not as a latency bound: the caller's assertion then says what was missing.
     */
    async caughtUp(): Promise<void> {
      const asked = `/revocations?after=${state.revocations.at(-1)?.cursor ?? "0"}`;
      for (let i = 0; i < 1000 && !server.requests.includes(asked); i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
  };
}

export interface DpopKey {
  privateKey: webcrypto.CryptoKey;
  publicJwk: JWK;
  jkt: string;
}

export async function generateDpopKey(): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  return { privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk, "sha256") };
}

export async function dpopProof(
  key: DpopKey,
  accessToken: string,
  overrides: { htm?: string; htu?: string; iat?: number; jti?: string; ath?: string } = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const { createHash } = await import("node:crypto");
  return new SignJWT({
    htm: overrides.htm ?? "GET",
    htu: overrides.htu ?? `${AUDIENCE}/contacts`,
    iat: overrides.iat ?? NOW,
    jti: overrides.jti ?? randomUUID(),
    ath: overrides.ath ?? createHash("sha256").update(accessToken).digest("base64url"),
  })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: key.publicJwk, ...header })
    .sign(key.privateKey);
}

/**
 * Runs `work` while counting every step of every `Map` iterator (`keys`, `values`, `entries`,
 * `for…of`); throws past `budget` steps (a scan) and on any `Map.prototype.forEach`. Returns the steps.
 */
export function countMapIteratorSteps(budget: number, work: () => void): number {
  let steps = 0;
  const originals = {
    keys: Map.prototype.keys,
    values: Map.prototype.values,
    entries: Map.prototype.entries,
    iterator: Map.prototype[Symbol.iterator],
    forEach: Map.prototype.forEach,
  };
  function counting<T>(iterator: MapIterator<T>): MapIterator<T> {
    const next = iterator.next.bind(iterator);
    return Object.assign(iterator, {
      next: () => {
        steps++;
        if (steps > budget) throw new Error(`more than ${budget} Map iterator steps: a scan`);
        return next();
      },
    });
  }
  Map.prototype.keys = function (this: Map<unknown, unknown>) {
    return counting(originals.keys.call(this));
  };
  Map.prototype.values = function (this: Map<unknown, unknown>) {
    return counting(originals.values.call(this));
  };
  Map.prototype.entries = function (this: Map<unknown, unknown>) {
    return counting(originals.entries.call(this));
  };
  Map.prototype[Symbol.iterator] = Map.prototype.entries;
  Map.prototype.forEach = () => {
    throw new Error("forEach over a Map: a scan");
  };
  try {
    work();
  } finally {
    Map.prototype.keys = originals.keys;
    Map.prototype.values = originals.values;
    Map.prototype.entries = originals.entries;
    Map.prototype[Symbol.iterator] = originals.iterator;
    Map.prototype.forEach = originals.forEach;
  }
  return steps;
}
