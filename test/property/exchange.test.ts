import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import {
  createLocalJWKSet,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from "jose";
import { sql } from "kysely";
import type { ApprovalStatus } from "../../sts/src/db/schema.js";
import { baseConfig, basicAuth, startTestApp, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { ACCESS_TOKEN_TYPE, insertApproval, JWT_TOKEN_TYPE, TOKEN_EXCHANGE } from "../helpers/exchange.js";
import { decodePayload, propertyRuns } from "./runs.js";

/**
 * Property: random and mutated token-exchange requests against a running STS never produce a 5xx, and
 * never a token whose scope, audience, lifetime, subject or client exceeds its approval; the budget
 * never goes over `max_tokens` and always equals the issued-token rows.
 */

/** Whether `value` can be sent as an HTTP header value (tab, visible ASCII and obs-text). */
function isHeaderValue(value: string): boolean {
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    if (code !== 0x09 && (code < 0x20 || code === 0x7f || code > 0xff)) return false;
  }
  return value.trim() === value;
}

const CRM = "https://crm.example.test";
const MAIL = "https://mail.example.test";
const FILES = "https://files.example.test";
const MAX_TTL = 600;
const DEFAULT_TTL = 300;
const RESOURCES: Record<string, { scopes: string[]; maxTtl: number | undefined }> = {
  [CRM]: { scopes: ["crm:read", "crm:write", "crm:delete"], maxTtl: 300 },
  [MAIL]: { scopes: ["mail:send", "mail:read"], maxTtl: undefined },
  [FILES]: { scopes: ["files:read", "files:write"], maxTtl: 3600 },
};
const ALL_SCOPES = Object.values(RESOURCES).flatMap((r) => r.scopes);
const CLIENTS = ["billing-agent", "post-agent"] as const;
type ClientId = (typeof CLIENTS)[number];

function config(): Record<string, unknown> {
  const base = baseConfig();
  return {
    ...base,
    tokens: { default_ttl_seconds: DEFAULT_TTL, max_ttl_seconds: MAX_TTL },
    resources: [
      ...(base.resources as unknown[]),
      { id: FILES, scopes: RESOURCES[FILES]?.scopes, max_ttl_seconds: 3600 },
    ],
    issuance_limits: {
      per_client: { per_second: 100000, burst: 100000 },
      per_approval: { per_second: 100000, burst: 100000 },
    },
  };
}

/** An approval as inserted, with what the test needs to judge tokens minted under it. */
interface KnownApproval {
  id: string;
  client: ClientId;
  resource: string;
  scopes: string[];
  subject: string | null;
  maxTokens: number;
  initialIssued: number;
  /** `expires_at` in seconds since the epoch, as stored. */
  expiresAt: number;
  status: ApprovalStatus;
  /** 200 answers seen for it. */
  granted: number;
}

const approvalArb = fc.record({
  resource: fc.constantFrom(CRM, MAIL, FILES),
  // Directly inserted rows may even hold scopes outside their resource: tokens must still stay within it.
  ownScopes: fc.integer({ min: 1, max: 3 }),
  foreignScope: fc.option(fc.constantFrom(...ALL_SCOPES), { freq: 4 }),
  maxTokens: fc.integer({ min: 1, max: 4 }),
  alreadyIssued: fc.constantFrom(0, 0, 0, 1),
  ttl: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.constantFrom(60, 299, 301, 599, 601, 3600, 86400)),
  subject: fc.constantFrom(null, "alice", "bob"),
  status: fc.constantFrom<ApprovalStatus>(
    "approved",
    "approved",
    "approved",
    "approved",
    "pending",
    "denied",
    "revoked",
  ),
  client: fc.constantFrom<ClientId>("billing-agent", "billing-agent", "post-agent"),
});

/** Mostly `valid` (about 80%), else one of the mutations: most requests carry zero to two mutations. */
function mostly<T extends string>(valid: readonly T[], mutations: readonly T[]): fc.Arbitrary<T> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(...valid), weight: 4 },
    { arbitrary: fc.constantFrom(...mutations), weight: 1 },
  );
}

const requestArb = fc.record({
  client: mostly(["owner"], ["other", "bad-secret", "none", "post-style"]),
  subjectToken: mostly(
    ["approval-subject", "approval-subject", "issued"],
    [
      "alice",
      "bob",
      "expired",
      "approver",
      "actor",
      "other-audience",
      "garbage",
      "huge",
      "flipped",
      "issued-other",
      "missing",
    ],
  ),
  subjectTokenType: mostly(["jwt"], ["access_token", "id_token", "garbage", "missing"]),
  target: mostly(["resource", "resource", "audience", "both-same"], ["other", "garbage", "missing", "two"]),
  scope: mostly(["omit", "subset"], ["superset", "foreign", "garbage", "huge", "empty", "dup"]),
  details: mostly(
    ["valid"],
    [
      "other-approval",
      "unknown",
      "garbage-json",
      "not-array",
      "two-tasks",
      "huge",
      "missing",
      "dup",
      "number-id",
      "extra-fields",
    ],
  ),
  extras: fc.oneof(
    { arbitrary: fc.constant<string[]>([]), weight: 4 },
    {
      arbitrary: fc.subarray(
        [
          "dup-grant",
          "requested-bad",
          "requested-ok",
          "actor-no-type",
          "actor-valid",
          "actor-garbage",
          "random-param",
          "dpop-garbage",
        ],
        { minLength: 1, maxLength: 2 },
      ),
      weight: 1,
    },
  ),
  garbage: fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 20 }),
    fc.constantFrom("apr_\u0000", "\ud800", "a\u0000b"),
  ),
  pick: fc.nat(),
});
type RequestSpec = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;

describe("property: token exchange never exceeds its approval", () => {
  let sts: TestApp;
  let jwks: ReturnType<typeof createLocalJWKSet>;
  const approvals = new Map<string, KnownApproval>();
  const tokens: Record<string, string> = {};
  /** Access tokens this STS issued, by approval id. */
  const issued = new Map<string, string[]>();
  let otherApproval: KnownApproval;
  const statuses = new Map<string, number>();

  async function addApproval(spec: {
    resource: string;
    scopes: string[];
    maxTokens: number;
    alreadyIssued: number;
    ttl: number;
    subject: string | null;
    status: ApprovalStatus;
    client: ClientId;
  }): Promise<KnownApproval> {
    const id = await insertApproval(sts.handle.db, {
      client_id: spec.client,
      resource: spec.resource,
      scope: spec.scopes.join(" "),
      subject: spec.subject,
      max_tokens: spec.maxTokens,
      tokens_issued: Math.min(spec.alreadyIssued, spec.maxTokens),
      ttl_seconds: spec.ttl,
      status: spec.status,
    });
    const row = await sts.handle.db
      .selectFrom("approvals")
      .select(["expires_at", "tokens_issued"])
      .where("id", "=", id)
      .executeTakeFirstOrThrow();
    const known: KnownApproval = {
      id,
      client: spec.client,
      resource: spec.resource,
      scopes: spec.scopes,
      subject: spec.subject,
      maxTokens: spec.maxTokens,
      initialIssued: row.tokens_issued,
      expiresAt: Math.floor(row.expires_at.getTime() / 1000),
      status: spec.status,
      granted: 0,
    };
    approvals.set(id, known);
    return known;
  }

  before(async () => {
    sts = await startTestApp({ engine: "pglite", config: config() });
    const dev = sts.app.services.devIssuer;
    assert.ok(dev);
    tokens.alice = await dev.mint({ sub: "alice", usage: "subject" });
    tokens.bob = await dev.mint({ sub: "bob", usage: "subject" });
    tokens.nobody = await dev.mint({ sub: "mallory", usage: "subject" });
    tokens.expired = await dev.mint({ sub: "alice", usage: "subject", ttlSeconds: -120 });
    tokens.approver = await dev.mint({ sub: "alice", usage: "approver" });
    tokens.actor = await dev.mint({ sub: "tool-runner", usage: "actor" });
    // Signed by the development issuer's own key, for another audience (mint() always sets the STS's).
    const devKey = JSON.parse(readFileSync(path.join(sts.dataDir, "dev-issuer.jwk"), "utf8")) as JWK;
    tokens.otherAudience = await new SignJWT({ usage: ["subject"] })
      .setProtectedHeader({ alg: "ES256", kid: "countersign-dev", typ: "JWT" })
      .setIssuer(dev.issuer)
      .setAudience("https://elsewhere.example.test")
      .setSubject("alice")
      .setIssuedAt()
      .setExpirationTime("1h")
      .sign(await importJWK(devKey, "ES256"));
    const alice = tokens.alice;
    const middle = Math.floor(alice.length * 0.8);
    tokens.flipped = alice.slice(0, middle) + (alice[middle] === "A" ? "B" : "A") + alice.slice(middle + 1);
    const keySet = (await (await fetch(`${sts.url}/jwks`)).json()) as JSONWebKeySet;
    jwks = createLocalJWKSet(keySet);
    otherApproval = await addApproval({
      resource: CRM,
      scopes: ["crm:read"],
      maxTokens: 1_000_000,
      alreadyIssued: 0,
      ttl: 86400,
      subject: null,
      status: "approved",
      client: "post-agent",
    });
  });
  after(async () => {
    console.log(`exchange property: answers by status ${JSON.stringify(Object.fromEntries(statuses))}`);
    await sts?.stop();
  });

  function subjectTokenFor(spec: RequestSpec, approval: KnownApproval): string | undefined {
    switch (spec.subjectToken) {
      case "approval-subject":
        return approval.subject === "bob"
          ? tokens.bob
          : approval.subject === null
            ? tokens.nobody
            : tokens.alice;
      case "issued": {
        const own = issued.get(approval.id) ?? [];
        return own[spec.pick % Math.max(1, own.length)] ?? tokens.alice;
      }
      case "issued-other": {
        const all = [...issued.values()].flat();
        return all[spec.pick % Math.max(1, all.length)] ?? tokens.bob;
      }
      case "garbage":
        return spec.garbage || "x";
      case "huge":
        return "a".repeat(20_000);
      case "missing":
        return undefined;
      case "other-audience":
        return tokens.otherAudience;
      default:
        return tokens[spec.subjectToken];
    }
  }

  function buildRequest(spec: RequestSpec, approval: KnownApproval) {
    const form = new URLSearchParams();
    form.append("grant_type", TOKEN_EXCHANGE);
    if (spec.extras.includes("dup-grant")) form.append("grant_type", "client_credentials");
    const subjectToken = subjectTokenFor(spec, approval);
    if (subjectToken !== undefined) form.append("subject_token", subjectToken);
    const types: Record<string, string> = {
      jwt: JWT_TOKEN_TYPE,
      access_token: ACCESS_TOKEN_TYPE,
      id_token: "urn:ietf:params:oauth:token-type:id_token",
      garbage: spec.garbage || "urn:ietf:params:oauth:token-type:refresh_token",
    };
    // An STS-issued token is an access token: present it as one unless the mutation says otherwise.
    const type =
      spec.subjectTokenType === "jwt" && spec.subjectToken.startsWith("issued")
        ? ACCESS_TOKEN_TYPE
        : types[spec.subjectTokenType];
    if (type !== undefined) form.append("subject_token_type", type);

    const other = Object.keys(RESOURCES).find((r) => r !== approval.resource) ?? MAIL;
    switch (spec.target) {
      case "resource":
        form.append("resource", approval.resource);
        break;
      case "audience":
        form.append("audience", approval.resource);
        break;
      case "both-same":
        form.append("resource", approval.resource);
        form.append("audience", approval.resource);
        break;
      case "other":
        form.append("resource", other);
        break;
      case "garbage":
        form.append("resource", spec.garbage);
        break;
      case "two":
        form.append("resource", approval.resource);
        form.append("resource", other);
        break;
      case "missing":
        break;
    }

    const own = approval.scopes;
    const resourceScopes = RESOURCES[approval.resource]?.scopes ?? [];
    switch (spec.scope) {
      case "subset":
        form.append("scope", own.slice(0, 1 + (spec.pick % own.length)).join(" "));
        break;
      case "superset":
        form.append("scope", [...new Set([...own, ...resourceScopes])].join(" "));
        break;
      case "foreign":
        form.append("scope", ALL_SCOPES[spec.pick % ALL_SCOPES.length] ?? "x");
        break;
      case "garbage":
        form.append("scope", spec.garbage);
        break;
      case "huge":
        form.append("scope", `${own.join(" ")} ${"z".repeat(5000)}`);
        break;
      case "empty":
        form.append("scope", "");
        break;
      case "dup":
        form.append("scope", own[0] ?? "");
        form.append("scope", resourceScopes.join(" "));
        break;
      case "omit":
        break;
    }

    const task = (id: unknown) => JSON.stringify([{ type: "agent_task", approval_id: id }]);
    switch (spec.details) {
      case "valid":
        form.append("authorization_details", task(approval.id));
        break;
      case "other-approval":
        form.append("authorization_details", task(otherApproval.id));
        break;
      case "unknown":
        form.append("authorization_details", task("apr_AAAAAAAAAAAAAAAAAAAAAA"));
        break;
      case "garbage-json":
        form.append("authorization_details", spec.garbage || "{");
        break;
      case "not-array":
        form.append(
          "authorization_details",
          JSON.stringify({ type: "agent_task", approval_id: approval.id }),
        );
        break;
      case "two-tasks":
        form.append(
          "authorization_details",
          JSON.stringify([
            { type: "agent_task", approval_id: approval.id },
            { type: "agent_task", approval_id: otherApproval.id },
          ]),
        );
        break;
      case "huge":
        form.append("authorization_details", task(approval.id.repeat(200)));
        break;
      case "dup":
        form.append("authorization_details", task(approval.id));
        form.append("authorization_details", task(otherApproval.id));
        break;
      case "number-id":
        form.append("authorization_details", task(12345));
        break;
      case "extra-fields":
        form.append(
          "authorization_details",
          JSON.stringify([
            { type: "agent_task", approval_id: approval.id, scope: "crm:delete", max_tokens: 1e9 },
          ]),
        );
        break;
      case "missing":
        break;
    }

    if (spec.extras.includes("requested-bad"))
      form.append("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token");
    if (spec.extras.includes("requested-ok")) form.append("requested_token_type", ACCESS_TOKEN_TYPE);
    if (spec.extras.includes("actor-no-type")) form.append("actor_token", tokens.actor ?? "");
    if (spec.extras.includes("actor-valid")) {
      form.append("actor_token", tokens.actor ?? "");
      form.append("actor_token_type", JWT_TOKEN_TYPE);
    }
    if (spec.extras.includes("actor-garbage")) {
      form.append("actor_token", spec.garbage || "x");
      form.append("actor_token_type", JWT_TOKEN_TYPE);
    }
    if (spec.extras.includes("random-param")) form.append(`x_${spec.pick % 7}`, spec.garbage);

    const owner = approval.client;
    const otherClient: ClientId = owner === "billing-agent" ? "post-agent" : "billing-agent";
    const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
    // A header can only carry what HTTP allows (fetch refuses anything else before sending it).
    if (spec.extras.includes("dpop-garbage"))
      headers.dpop = isHeaderValue(spec.garbage) && spec.garbage ? spec.garbage : "not-a-proof";
    let client: ClientId | undefined;
    const authenticate = (id: ClientId, secret = TEST_SECRET) => {
      if (id === "billing-agent") headers.authorization = basicAuth(id, secret);
      else {
        form.append("client_id", id);
        form.append("client_secret", secret);
      }
    };
    switch (spec.client) {
      case "owner":
        client = owner;
        authenticate(owner);
        break;
      case "other":
        client = otherClient;
        authenticate(otherClient);
        break;
      case "bad-secret":
        authenticate(owner, `${TEST_SECRET}x`);
        break;
      case "post-style":
        // client_secret_post for a client registered for client_secret_basic (and vice versa): oidc-provider
        // treats the two secret methods as one, so this authenticates the owner.
        client = owner;
        if (owner === "billing-agent") {
          form.append("client_id", owner);
          form.append("client_secret", TEST_SECRET);
        } else headers.authorization = basicAuth(owner, TEST_SECRET);
        break;
      case "none":
        break;
    }
    return { form, headers, client, subjectToken };
  }

  async function checkGranted(
    body: Record<string, unknown>,
    client: ClientId | undefined,
    subjectToken: string | undefined,
    requestedScope: string | null,
  ): Promise<void> {
    assert.equal(typeof body.access_token, "string");
    const token = body.access_token as string;
    // Verified at its issue time: a token capped by an approval that expires in a second may be past
    // its exp by now on a slow machine; what is checked here is what was signed, not timeliness.
    const issuedAt = new Date(Number(decodePayload(token).iat) * 1000);
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer: sts.url,
      typ: "at+jwt",
      currentDate: issuedAt,
    });
    assert.equal(protectedHeader.alg, "ES256");
    const approval = approvals.get(String(payload.approval_id));
    assert.ok(approval, `token for an unknown approval ${String(payload.approval_id)}`);
    approval.granted += 1;
    const list = issued.get(approval.id) ?? [];
    list.push(token);
    issued.set(approval.id, list);

    // Only the approval's own client, only an approved approval.
    assert.equal(approval.status, "approved");
    assert.ok(
      client !== undefined && client === approval.client,
      `client ${client} used ${approval.client}'s approval`,
    );
    assert.equal(payload.client_id, approval.client);
    // aud = the approval's resource, exactly one.
    assert.equal(payload.aud, approval.resource);
    // scope ⊆ approval.scope ∩ resource scopes (and ⊆ what was asked, when something was asked).
    const scopes = String(payload.scope).split(" ");
    assert.ok(scopes.length > 0 && scopes.every((s) => s.length > 0));
    const resourceScopes = RESOURCES[approval.resource]?.scopes ?? [];
    for (const scope of scopes) {
      assert.ok(
        approval.scopes.includes(scope),
        `scope ${scope} not in approval ${approval.scopes.join(" ")}`,
      );
      assert.ok(resourceScopes.includes(scope), `scope ${scope} not a scope of ${approval.resource}`);
      // An empty scope parameter is an omitted one (RFC 6749 §3.3): everything the approval allows.
      if (requestedScope !== null && requestedScope.trim() !== "")
        assert.ok(
          requestedScope.split(" ").includes(scope),
          `${scope} was not requested (${requestedScope})`,
        );
    }
    assert.equal(body.scope, payload.scope);
    // Lifetime: exp ≤ approval expiry, exp - iat ≤ the resource's and the STS's maximum.
    const iat = payload.iat as number;
    const exp = payload.exp as number;
    const resourceMax = RESOURCES[approval.resource]?.maxTtl ?? DEFAULT_TTL;
    assert.ok(exp <= approval.expiresAt, `exp ${exp} after approval expiry ${approval.expiresAt}`);
    assert.ok(exp - iat <= Math.min(resourceMax, MAX_TTL), `lifetime ${exp - iat}`);
    assert.ok(exp > iat);
    assert.equal(body.expires_in, exp - iat);
    // Subject: the approval's when set; never wider than an STS-issued subject token.
    if (approval.subject !== null) assert.equal(payload.sub, approval.subject);
    if (subjectToken !== undefined && subjectToken.split(".").length === 3) {
      const presented = decodePayload(subjectToken) as JWTPayload;
      assert.equal(payload.sub, presented.sub);
      if (presented.iss === sts.url) {
        assert.equal(presented.approval_id, approval.id);
        assert.ok(exp <= (presented.exp as number));
        const bound = String(presented.scope).split(" ");
        for (const scope of scopes) assert.ok(bound.includes(scope), `${scope} wider than the subject token`);
      }
    }
    assert.deepEqual(payload.authorization_details, [
      { type: "agent_task", approval_id: approval.id, task: "reconcile the March invoices" },
    ]);
  }

  test("random and mutated requests: never a 5xx, never a token beyond its approval", async () => {
    await fc.assert(
      fc.asyncProperty(
        approvalArb,
        fc.array(requestArb, { minLength: 1, maxLength: 4 }),
        async (a, requests) => {
          const own = RESOURCES[a.resource]?.scopes ?? [];
          const scopes = own.slice(0, a.ownScopes);
          if (a.foreignScope !== null && !scopes.includes(a.foreignScope)) scopes.push(a.foreignScope);
          const approval = await addApproval({ ...a, scopes });
          for (const spec of requests) {
            const { form, headers, client, subjectToken } = buildRequest(spec, approval);
            const response = await fetch(`${sts.url}/token`, {
              method: "POST",
              headers,
              body: form.toString(),
            });
            const text = await response.text();
            const outcome =
              `${response.status} ${/"error_description":"([^"]*)"/.exec(text)?.[1] ?? ""}`.trim();
            statuses.set(outcome, (statuses.get(outcome) ?? 0) + 1);
            assert.ok(response.status < 500, `${response.status} ${text} for ${JSON.stringify(spec)}`);
            assert.ok([200, 400, 401].includes(response.status), `${response.status} ${text}`);
            const body = JSON.parse(text) as Record<string, unknown>;
            // Credentials that must never yield a token: an unauthenticated client, a subject token that is
            // expired, tampered, meant for another audience, or issued for another usage (approver, actor).
            const forbidden =
              ["bad-secret", "none"].includes(spec.client) ||
              [
                "expired",
                "approver",
                "actor",
                "other-audience",
                "garbage",
                "huge",
                "flipped",
                "missing",
              ].includes(spec.subjectToken);
            assert.ok(!(forbidden && response.status === 200), `a token for ${JSON.stringify(spec)}`);
            if (response.status !== 200) {
              assert.equal(typeof body.error, "string", text);
              assert.equal(body.access_token, undefined);
              continue;
            }
            const requestedScopes = form.getAll("scope");
            await checkGranted(
              body,
              client,
              subjectToken,
              requestedScopes.length === 1 ? (requestedScopes[0] ?? null) : null,
            );
          }
        },
      ),
      propertyRuns(100, 1500),
    );
  });

  test("afterwards: tokens_issued ≤ max_tokens and equals the 200s and the issued_tokens rows", async () => {
    const rows = await sql<{ id: string; tokens_issued: number; max_tokens: number; n: number }>`
      select a.id, a.tokens_issued, a.max_tokens,
        (select count(*)::int from issued_tokens t where t.approval_id = a.id) as n
      from approvals a`.execute(sts.handle.db);
    assert.equal(rows.rows.length, approvals.size);
    let granted = 0;
    for (const row of rows.rows) {
      const known = approvals.get(row.id);
      assert.ok(known);
      assert.ok(row.tokens_issued <= row.max_tokens, `${row.id}: ${row.tokens_issued} > ${row.max_tokens}`);
      assert.equal(row.tokens_issued, known.initialIssued + known.granted, row.id);
      assert.equal(row.n, known.granted, row.id);
      granted += known.granted;
    }
    console.log(`exchange property: ${approvals.size} approvals, ${granted} tokens granted and checked`);
    assert.ok(granted > 0, "no request was ever granted: the generators are too hostile to test anything");
  });
});
