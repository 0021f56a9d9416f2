import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  createRemoteJWKSet,
  decodeJwt,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from "jose";
import * as oauth from "openid-client";
import { ConfigError, loadConfig } from "../../../sts/src/config/load.js";
import { SPENT_ASSERTION_TYPE } from "../../../sts/src/exchange/assertion_replay.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";

const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/** The enterprise IdP the tests play: trusted for id_jag. */
const IDP = "https://idp.example.test";
/** Another IdP, trusted for subject tokens only (with the STS's issuer as audience). */
const SUBJECT_IDP = "https://workforce.example.test";
const MCP = "https://tools.example.test/mcp";
const UNCONFIGURED = "https://elsewhere.example.test/mcp";

interface IdpKeys {
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

async function idpKeys(kid: string): Promise<IdpKeys> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

function config(
  issuer: string,
  keys: { idp: IdpKeys; subjectIdp: IdpKeys },
  extra: Record<string, unknown> = {},
) {
  const base = baseConfig();
  return {
    ...base,
    resources: [
      ...(base.resources as unknown[]),
      { id: MCP, scopes: ["tools:read", "mail:send", "files:read"], default_scopes: ["tools:read"] },
    ],
    trusted_issuers: [
      { issuer: IDP, jwks: { keys: [keys.idp.jwk] }, audience: issuer, usage: ["id_jag"] },
      { issuer: SUBJECT_IDP, jwks: { keys: [keys.subjectIdp.jwk] }, audience: issuer, usage: ["subject"] },
    ],
    // The suites below send dozens of requests from one client; the bucket has a test of its own.
    issuance_limits: { client_credentials: { per_second: 1000, burst: 1000 } },
    ...extra,
  };
}

/** Signs an ID-JAG as the IdP would; `claims` replace (or, as undefined, drop) the defaults. */
async function signIdJag(
  keys: IdpKeys,
  audience: string,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iss: IDP,
    sub: "alice",
    aud: audience,
    client_id: "billing-agent",
    jti: randomUUID(),
    iat: now,
    exp: now + 300,
    resource: MCP,
    scope: "tools:read",
    ...claims,
  };
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
  return new SignJWT(payload as JWTPayload)
    .setProtectedHeader({ alg: "ES256", typ: "oauth-id-jag+jwt", kid: keys.jwk.kid, ...header } as {
      alg: string;
    })
    .sign(keys.privateKey);
}

/** `alg: none`: a JWT with an empty signature. */
function unsignedIdJag(audience: string): string {
  const now = Math.floor(Date.now() / 1000);
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "none", typ: "oauth-id-jag+jwt" })}.${part({
    iss: IDP,
    sub: "alice",
    aud: audience,
    client_id: "billing-agent",
    jti: randomUUID(),
    iat: now,
    exp: now + 300,
    resource: MCP,
  })}.`;
}

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

describe("trusted_issuers usage id_jag: the configuration", () => {
  const issuer = "https://sts.example.test";
  const load = (entry: Record<string, unknown>) =>
    loadConfig(
      { COUNTERSIGN_DATA_DIR: tmpdir() },
      {
        issuer,
        dev_mode: false,
        trusted_issuers: [{ issuer: IDP, jwks: { keys: [] }, audience: issuer, ...entry }],
      },
    );
  const refusedWith = (text: string) => (error: unknown) =>
    error instanceof ConfigError && error.issues.some((issue) => issue.includes(text));

  test("id_jag stands alone: combined with subject or approver it is refused", () => {
    for (const usage of [
      ["id_jag", "subject"],
      ["approver", "id_jag"],
    ]) {
      assert.throws(
        () => load({ usage }),
        refusedWith("trusted_issuers[0].usage: id_jag may not be combined with another usage"),
      );
    }
    assert.deepEqual(load({ usage: ["id_jag"] }).trusted_issuers[0]?.usage, ["id_jag"]);
  });

  test("an id_jag entry's audience must be the STS's issuer, exactly", () => {
    for (const audience of ["https://other.example.test", `${issuer}/`]) {
      assert.throws(
        () => load({ usage: ["id_jag"], audience }),
        refusedWith(
          `trusted_issuers[0].audience: an id_jag entry's audience must be this STS's issuer (${issuer})`,
        ),
      );
    }
    // Other usages keep any audience.
    assert.equal(
      load({ usage: ["subject"], audience: "https://api.example.test" }).trusted_issuers.length,
      1,
    );
  });

  test("an id_jag entry's max_token_age_seconds is at most 3600", () => {
    assert.throws(
      () => load({ usage: ["id_jag"], max_token_age_seconds: 3601 }),
      refusedWith(
        "trusted_issuers[0].max_token_age_seconds: an id_jag entry accepts ID-JAGs for at most 3600 seconds",
      ),
    );
    assert.equal(
      load({ usage: ["id_jag"], max_token_age_seconds: 3600 }).trusted_issuers[0]?.max_token_age_seconds,
      3600,
    );
  });
});

for (const engine of testEngines()) {
  describe(`jwt-bearer grant redeeming ID-JAGs (${engine})`, () => {
    let sts: TestApp;
    let keys: { idp: IdpKeys; subjectIdp: IdpKeys };
    let approver: string;

    const idJag = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
      signIdJag(keys.idp, sts.url, claims, header);
    const redeem = (
      assertion: string,
      form: Record<string, string> = {},
      clientId = "billing-agent",
      headers: Record<string, string> = {},
    ): Promise<Reply> =>
      postForm(
        `${sts.url}/token`,
        { grant_type: JWT_BEARER, assertion, ...form },
        { authorization: basicAuth(clientId, TEST_SECRET), ...headers },
      );
    const api = async (path: string, method: string, body?: unknown) => {
      const response = await fetch(`${sts.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${approver}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const approvalsOf = (clientId: string, subject: string) =>
      sts.handle.db
        .selectFrom("approvals")
        .selectAll()
        .where("client_id", "=", clientId)
        .where("resource", "=", MCP)
        .where("subject", "=", subject)
        .orderBy("created_at")
        .execute();
    const refusalReasons = (clientId: string) =>
      sts.handle.db
        .selectFrom("audit_events")
        .select("reason")
        .where("event", "=", "jwt_bearer")
        .where("client_id", "=", clientId)
        .execute()
        .then((rows) => new Set(rows.map((row) => row.reason)));
    /** An approved approval of billing-agent for alice of the IdP, for `scope` on the MCP resource. */
    const approvedForAlice = (scope: string, values: Parameters<typeof insertApproval>[1] = {}) =>
      insertApproval(sts.handle.db, {
        resource: MCP,
        scope,
        subject: "alice",
        subject_issuer: IDP,
        ...values,
      });

    before(async () => {
      keys = { idp: await idpKeys("idp-1"), subjectIdp: await idpKeys("workforce-1") };
      // The default policy, and one that forbids every token about mallory.
      const policyDir = mkdtempSync(path.join(tmpdir(), "countersign-idjag-"));
      const policy = path.join(policyDir, "policy.cedar");
      writeFileSync(
        policy,
        `${readFileSync(path.resolve(import.meta.dirname, "../../../policies/default.cedar"), "utf8")}
@id("no-mallory")
@reason("no tokens about mallory")
forbid (principal, action == Action::"exchange", resource) when { context.subject == Subject::"mallory" };
`,
      );
      sts = await startTestApp({ engine, config: (issuer) => config(issuer, keys, { policies: [policy] }) });
      approver = await sts.app.services.devIssuer!.mint({ sub: "carol", usage: "approver" });
    });
    after(async () => {
      await sts.stop();
    });

    test("metadata advertises the jwt-bearer grant once an issuer is trusted for id_jag", async () => {
      const metadata = (await (await fetch(`${sts.url}/.well-known/oauth-authorization-server`)).json()) as {
        grant_types_supported: string[];
      };
      assert.deepEqual(metadata.grant_types_supported.toSorted(), [
        "client_credentials",
        JWT_BEARER,
        "urn:ietf:params:oauth:grant-type:token-exchange",
      ]);
    });

    test("pending → approve → a token for alice through billing-agent → revoke → access_denied", async () => {
      const assertion = await idJag({ scope: "files:read" });
      const first = await redeem(assertion);
      assert.equal(first.status, 400);
      assert.equal(first.body.error, "authorization_pending");
      const id = first.body.approval_id as string;
      assert.match(id, /^apr_[A-Za-z0-9_-]{22}$/);
      assert.match(first.body.error_description as string, new RegExp(`approval ${id} was requested`));
      const rows = (await approvalsOf("billing-agent", "alice")).filter((row) => row.id === id);
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.status, "pending");
      assert.equal(rows[0]!.subject_issuer, IDP);
      assert.equal(rows[0]!.requested_scope, "files:read");
      assert.match(rows[0]!.task, /ID-JAG/);

      // The same assertion again (a pending answer spends nothing): the same approval, no second row.
      const again = await redeem(assertion);
      assert.equal(again.status, 400);
      assert.equal(again.body.error, "authorization_pending");
      assert.equal(again.body.approval_id, id);
      assert.match(again.body.error_description as string, new RegExp(`approval ${id} still waits`));
      const requested = (await approvalsOf("billing-agent", "alice")).filter(
        (row) => row.requested_scope === "files:read",
      );
      assert.equal(requested.length, 1);

      assert.equal((await api(`/approvals/${id}/approve`, "POST", { max_tokens: 3 })).status, 200);
      const minted = await redeem(assertion);
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(minted.body.token_type, "Bearer");
      assert.equal(minted.body.scope, "files:read");
      assert.equal(minted.body.refresh_token, undefined);
      assert.equal(minted.body.issued_token_type, undefined);
      const { payload, protectedHeader } = await jwtVerify(
        minted.body.access_token as string,
        createRemoteJWKSet(new URL(`${sts.url}/jwks`)),
        { issuer: sts.url, audience: MCP, typ: "at+jwt" },
      );
      assert.equal(protectedHeader.typ, "at+jwt");
      assert.equal(payload.sub, "alice");
      assert.equal(payload.client_id, "billing-agent");
      assert.equal(payload.scope, "files:read");
      assert.equal(payload.approval_id, id);
      assert.equal(payload.act, undefined);
      assert.deepEqual(payload.authorization_details, [
        { type: "agent_task", approval_id: id, task: rows[0]!.task },
      ]);
      assert.equal((payload.exp as number) - (payload.iat as number), minted.body.expires_in);
      assert.equal((await api(`/approvals/${id}`, "GET")).body.tokens_issued, 1);
      const issued = await sts.handle.db
        .selectFrom("issued_tokens")
        .select(["sub", "client_id", "aud"])
        .where("jti", "=", payload.jti as string)
        .executeTakeFirstOrThrow();
      assert.deepEqual(issued, { sub: "alice", client_id: "billing-agent", aud: MCP });

      // The assertion is spent: presenting it again is a replay.
      const replayed = await redeem(assertion);
      assert.equal(replayed.status, 400);
      assert.equal(replayed.body.error, "invalid_grant");
      assert.equal(replayed.body.error_description, "a token was already issued for this assertion (jti)");

      // A fresh assertion is served by the same approval; after a revoke it is refused, naming it.
      const second = await redeem(await idJag({ scope: "files:read" }));
      assert.equal(second.status, 200, JSON.stringify(second.body));
      assert.equal(decodeJwt(second.body.access_token as string).approval_id, id);
      assert.equal((await api(`/approvals/${id}/revoke`, "POST", { reason: "done" })).status, 200);
      const revoked = await redeem(await idJag({ scope: "files:read" }));
      assert.equal(revoked.status, 400);
      assert.equal(revoked.body.error, "access_denied");
      assert.equal(revoked.body.approval_id, id);
      assert.match(revoked.body.error_description as string, new RegExp(`approval ${id} was revoked`));
      const reasons = await refusalReasons("billing-agent");
      for (const reason of [
        "approval_requested",
        "approval_pending",
        "id_jag_replayed",
        "approval_cooldown",
      ]) {
        assert.ok(reasons.has(reason), reason);
      }
    });

    test("openid-client v6, unmodified, redeems an ID-JAG with a DPoP proof: a DPoP-bound token", async () => {
      const id = await approvedForAlice("tools:read");
      const client = await oauth.discovery(
        new URL(sts.url),
        "billing-agent",
        undefined,
        oauth.ClientSecretBasic(TEST_SECRET),
        { execute: [oauth.allowInsecureRequests] },
      );
      assert.ok(client.serverMetadata().grant_types_supported?.includes(JWT_BEARER));
      const dpopKeys = await oauth.randomDPoPKeyPair("ES256");
      const response = await oauth.genericGrantRequest(
        client,
        JWT_BEARER,
        { assertion: await idJag({ scope: "tools:read" }) },
        { DPoP: oauth.getDPoPHandle(client, dpopKeys) },
      );
      assert.equal(response.token_type, "dpop");
      assert.equal(response.scope, "tools:read");
      assert.equal(response.refresh_token, undefined);
      const claims = decodeJwt(response.access_token);
      assert.equal(claims.sub, "alice");
      assert.equal(claims.client_id, "billing-agent");
      assert.equal(claims.approval_id, id);
      assert.equal(
        (claims.cnf as { jkt: string }).jkt,
        await calculateJwkThumbprint(await exportJWK(dpopKeys.publicKey)),
      );
    });

    test("a request's resource and scope: the resource names the target; a narrower scope is served", async () => {
      await approvedForAlice("tools:read mail:send");
      const assertion = await idJag({
        resource: [MCP, "https://crm.example.test"],
        scope: "tools:read mail:send",
      });
      const minted = await redeem(assertion, { resource: MCP, scope: "mail:send" });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(minted.body.scope, "mail:send");
      assert.equal(decodeJwt(minted.body.access_token as string).aud, MCP);
    });

    test("the STS's jti store is shared: of 5 concurrent redemptions of one assertion, exactly 1 is served", async () => {
      const id = await approvedForAlice("tools:read", { max_tokens: 10 });
      const assertion = await idJag();
      const replies = await Promise.all(Array.from({ length: 5 }, () => redeem(assertion)));
      const served = replies.filter((reply) => reply.status === 200);
      assert.equal(served.length, 1, JSON.stringify(replies.map((reply) => reply.body)));
      assert.equal(decodeJwt(served[0]!.body.access_token as string).approval_id, id);
      for (const reply of replies.filter((r) => r.status !== 200)) {
        assert.equal(reply.status, 400);
        assert.equal(reply.body.error, "invalid_grant");
        assert.equal(reply.body.error_description, "a token was already issued for this assertion (jti)");
      }
      // The spent jti is kept until the assertion expires (plus the clock tolerance), as a digest.
      const rows = await sts.handle.db
        .selectFrom("oidc_payloads")
        .select(["id", "expires_at"])
        .where("type", "=", SPENT_ASSERTION_TYPE)
        .execute();
      const exp = decodeJwt(assertion).exp as number;
      assert.ok(rows.some((row) => row.expires_at?.getTime() === (exp + 30) * 1000));
      assert.ok(rows.every((row) => !row.id.includes("alice")));
    });

    test("a pending answer spends nothing; the approved retry spends the assertion once", async () => {
      const spentRows = async () =>
        (
          await sts.handle.db
            .selectFrom("oidc_payloads")
            .select("id")
            .where("type", "=", SPENT_ASSERTION_TYPE)
            .execute()
        ).length;
      const assertion = await idJag({ sub: "dave" });
      const before = await spentRows();
      const pending = await redeem(assertion);
      assert.equal(pending.body.error, "authorization_pending");
      assert.equal(await spentRows(), before);
      assert.equal((await api(`/approvals/${pending.body.approval_id}/approve`, "POST", {})).status, 200);
      const served = await redeem(assertion);
      assert.equal(served.status, 200, JSON.stringify(served.body));
      assert.equal(await spentRows(), before + 1);
    });

    test("Cedar decides too: a forbidden token is refused (policy_denied) and gives the assertion back", async () => {
      const id = await approvedForAlice("tools:read", { subject: "mallory" });
      const assertion = await idJag({ sub: "mallory" });
      for (let i = 0; i < 2; i++) {
        // The second presentation is decided again, not refused as a replay: nothing was spent.
        const reply = await redeem(assertion);
        assert.equal(reply.status, 400);
        assert.equal(reply.body.error, "invalid_grant");
        assert.match(reply.body.error_description as string, /^forbidden by policy no-mallory: /);
      }
      assert.equal((await api(`/approvals/${id}`, "GET")).body.tokens_issued, 0);
      assert.ok((await refusalReasons("billing-agent")).has("policy_denied"));
    });

    describe("what an approval does not cover is not served", () => {
      test("a scope beyond the approved one: a new pending approval, no token", async () => {
        const id = await approvedForAlice("tools:read", { client_id: "billing-agent" });
        const reply = await redeem(await idJag({ scope: "tools:read mail:send files:read" }));
        assert.equal(reply.status, 400);
        assert.equal(reply.body.error, "authorization_pending");
        assert.notEqual(reply.body.approval_id, id);
        const row = (await approvalsOf("billing-agent", "alice")).find(
          (r) => r.id === reply.body.approval_id,
        );
        assert.equal(row?.requested_scope, "files:read mail:send tools:read");
      });

      test("another agent's approval for the same user: not this agent's", async () => {
        const other = await insertApproval(sts.handle.db, {
          client_id: "post-agent",
          resource: MCP,
          scope: "files:read mail:send",
          subject: "erin",
          subject_issuer: IDP,
        });
        const reply = await redeem(await idJag({ sub: "erin", scope: "files:read mail:send" }));
        assert.equal(reply.status, 400);
        assert.equal(reply.body.error, "authorization_pending");
        assert.notEqual(reply.body.approval_id, other);
        assert.equal((await approvalsOf("billing-agent", "erin")).length, 1);
      });

      test("an approval for another subject, or for the same sub of another issuer: not alice's", async () => {
        const bob = await approvedForAlice("mail:send", { subject: "frank" });
        const otherIssuer = await approvedForAlice("mail:send", {
          subject: "grace",
          subject_issuer: SUBJECT_IDP,
        });
        for (const [sub, notThis] of [
          ["grace", otherIssuer],
          ["heidi", bob],
        ] as const) {
          const reply = await redeem(await idJag({ sub, scope: "mail:send" }));
          assert.equal(reply.status, 400, sub);
          assert.equal(reply.body.error, "authorization_pending", sub);
          assert.notEqual(reply.body.approval_id, notThis, sub);
        }
      });
    });

    describe("adversary: assertions the STS must refuse (invalid_grant, nothing recorded)", () => {
      const refusals: [string, () => Promise<string>, string, Record<string, string>?, string?][] = [];
      const refuses = (
        name: string,
        assertion: () => Promise<string>,
        reason: string,
        form: Record<string, string> = {},
        clientId = "billing-agent",
      ) => refusals.push([name, assertion, reason, form, clientId]);

      refuses("typ JWT", () => idJag({}, { typ: "JWT" }), "id_jag_type_invalid");
      refuses("no typ", () => idJag({}, { typ: undefined }), "id_jag_type_invalid");
      refuses("typ at+jwt", () => idJag({}, { typ: "at+jwt" }), "id_jag_type_invalid");
      refuses(
        "aud another AS",
        () => idJag({ aud: "https://other-as.example.test" }),
        "id_jag_audience_mismatch",
      );
      refuses(
        "client_id of another client",
        () => idJag({ client_id: "post-agent" }),
        "id_jag_client_mismatch",
      );
      refuses("presented by another client", () => idJag(), "id_jag_client_mismatch", {}, "post-agent");
      refuses(
        "expired",
        () => idJag({ iat: Math.floor(Date.now() / 1000) - 200, exp: Math.floor(Date.now() / 1000) - 60 }),
        "id_jag_expired",
      );
      refuses(
        "iat in the future",
        () => idJag({ iat: Math.floor(Date.now() / 1000) + 120, exp: Math.floor(Date.now() / 1000) + 300 }),
        "id_jag_not_yet_valid",
      );
      refuses(
        "older than the entry's max age (300 s)",
        () => idJag({ iat: Math.floor(Date.now() / 1000) - 400, exp: Math.floor(Date.now() / 1000) + 60 }),
        "id_jag_too_old",
      );
      refuses(
        "a lifetime longer than the max age",
        () => idJag({ exp: Math.floor(Date.now() / 1000) + 3600 }),
        "id_jag_lifetime_too_long",
      );
      refuses("no jti", () => idJag({ jti: undefined }), "id_jag_claim_missing");
      refuses("no client_id", () => idJag({ client_id: undefined }), "id_jag_claim_missing");
      refuses("no iat", () => idJag({ iat: undefined }), "id_jag_claim_missing");
      refuses("no exp", () => idJag({ exp: undefined }), "id_jag_claim_missing");
      refuses("no sub", () => idJag({ sub: undefined }), "id_jag_claim_missing");
      refuses(
        "an issuer trusted for subject tokens only",
        () => signIdJag(keys.subjectIdp, sts.url, { iss: SUBJECT_IDP }),
        "id_jag_usage_not_allowed",
      );
      refuses(
        "an untrusted issuer",
        () => idJag({ iss: "https://evil.example.test" }),
        "id_jag_issuer_untrusted",
      );
      refuses(
        "signed with another key",
        () => signIdJag(keys.subjectIdp, sts.url, {}, { kid: "idp-1" }),
        "id_jag_signature_invalid",
      );
      refuses("unsigned (alg none)", async () => unsignedIdJag(sts.url), "id_jag_algorithm_not_allowed");
      refuses("not a JWT", async () => "not-a-jwt", "id_jag_malformed");
      refuses(
        "a resource that is not configured",
        () => idJag({ resource: UNCONFIGURED }),
        "resource_unknown",
      );
      refuses("a requested resource the assertion does not name", () => idJag(), "id_jag_resource_mismatch", {
        resource: "https://crm.example.test",
      });
      refuses("no resource at all", () => idJag({ resource: undefined }), "target_invalid");
      refuses("a requested scope beyond the assertion's", () => idJag(), "id_jag_scope_exceeded", {
        scope: "tools:read mail:send",
      });
      refuses("a scope the resource does not have", () => idJag({ scope: "admin" }), "scope_unknown");

      const wire: Record<string, [number, string]> = {
        resource_unknown: [400, "invalid_target"],
        id_jag_resource_mismatch: [400, "invalid_target"],
        target_invalid: [400, "invalid_target"],
        id_jag_scope_exceeded: [400, "invalid_scope"],
        scope_unknown: [400, "invalid_scope"],
      };
      test("each is refused with its status, error and reason; no approval is recorded", async () => {
        const before = await sts.handle.db.selectFrom("approvals").select("id").execute();
        for (const [name, make, reason, form, clientId] of refusals) {
          const reply = await redeem(await make(), form, clientId);
          const [status, error] = wire[reason] ?? [400, "invalid_grant"];
          assert.equal(reply.status, status, `${name}: ${JSON.stringify(reply.body)}`);
          assert.equal(reply.body.error, error, name);
          assert.equal(reply.body.access_token, undefined, name);
          const audited = await sts.handle.db
            .selectFrom("audit_events")
            .select("reason")
            .where("event", "=", "jwt_bearer")
            .where("reason", "=", reason)
            .execute();
          assert.ok(audited.length > 0, `${name}: ${reason} audited`);
        }
        const after = await sts.handle.db.selectFrom("approvals").select("id").execute();
        assert.equal(after.length, before.length);
      });

      test("typ compares case-insensitively, with or without application/ (RFC 8725 §3.11)", async () => {
        await approvedForAlice("tools:read");
        for (const typ of ["OAuth-ID-JAG+JWT", "application/oauth-id-jag+jwt"]) {
          const reply = await redeem(await idJag({}, { typ }));
          assert.equal(reply.status, 200, `${typ}: ${JSON.stringify(reply.body)}`);
        }
      });

      test("no assertion, or two: invalid_request", async () => {
        const missing = await postForm(
          `${sts.url}/token`,
          { grant_type: JWT_BEARER },
          { authorization: basicAuth("billing-agent", TEST_SECRET) },
        );
        assert.equal(missing.status, 400);
        assert.equal(missing.body.error, "invalid_request");
        const assertion = await idJag();
        const response = await fetch(`${sts.url}/token`, {
          method: "POST",
          headers: {
            "content-type": "application/x-www-form-urlencoded",
            authorization: basicAuth("billing-agent", TEST_SECRET),
          },
          body: `grant_type=${encodeURIComponent(JWT_BEARER)}&assertion=${assertion}&assertion=${assertion}`,
        });
        assert.equal(response.status, 400);
        assert.equal(((await response.json()) as { error: string }).error, "invalid_request");
      });

      test("without client authentication: invalid_client", async () => {
        const reply = await postForm(`${sts.url}/token`, {
          grant_type: JWT_BEARER,
          assertion: await idJag(),
          client_id: "billing-agent",
        });
        assert.equal(reply.status, 401);
        assert.equal(reply.body.error, "invalid_client");
      });
    });
  });
}

describe("the jwt-bearer grant without an id_jag issuer, and the per-agent pending cap", () => {
  const engine = testEngines()[0]!;

  test("no issuer trusted for id_jag: unsupported_grant_type, and metadata does not name it", async () => {
    const sts = await startTestApp({ engine });
    try {
      const metadata = (await (await fetch(`${sts.url}/.well-known/oauth-authorization-server`)).json()) as {
        grant_types_supported: string[];
      };
      assert.ok(!metadata.grant_types_supported.includes(JWT_BEARER));
      const reply = await postForm(
        `${sts.url}/token`,
        { grant_type: JWT_BEARER, assertion: "x.y.z" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(reply.status, 400);
      assert.equal(reply.body.error, "unsupported_grant_type");
    } finally {
      await sts.stop();
    }
  });

  test("issuance_limits.client_credentials bounds redemptions before any work: a pending ID-JAG re-presented in a loop gets 429 slow_down (rate_limited)", async () => {
    const keys = { idp: await idpKeys("idp-1"), subjectIdp: await idpKeys("workforce-1") };
    const sts = await startTestApp({
      engine,
      config: (issuer) =>
        config(issuer, keys, { issuance_limits: { client_credentials: { per_second: 0.001, burst: 3 } } }),
    });
    try {
      const assertion = await signIdJag(keys.idp, sts.url);
      const answers = [];
      for (let i = 0; i < 6; i++) {
        answers.push(
          await postForm(
            `${sts.url}/token`,
            { grant_type: JWT_BEARER, assertion },
            { authorization: basicAuth("billing-agent", TEST_SECRET) },
          ),
        );
      }
      assert.deepEqual(
        answers.map((answer) => [answer.status, answer.body.error]),
        [
          [400, "authorization_pending"],
          [400, "authorization_pending"],
          [400, "authorization_pending"],
          [429, "slow_down"],
          [429, "slow_down"],
          [429, "slow_down"],
        ],
      );
      assert.equal(
        answers[3]?.body.error_description,
        "too many token requests; retry after the indicated delay",
      );
      assert.match(answers[3]?.headers.get("retry-after") ?? "", /^[1-9][0-9]*$/);
      const recorded = await sts.handle.db
        .selectFrom("approvals")
        .select("id")
        .where("client_id", "=", "billing-agent")
        .execute();
      assert.equal(recorded.length, 1);
    } finally {
      await sts.stop();
    }
  });

  test("approvals.max_pending_per_agent bounds the approvals ID-JAGs record: 429 slow_down with Retry-After", async () => {
    const keys = { idp: await idpKeys("idp-1"), subjectIdp: await idpKeys("workforce-1") };
    const sts = await startTestApp({
      engine,
      config: (issuer) =>
        config(issuer, keys, {
          approvals: { max_pending_per_agent: 2, request_rate_limit: { per_second: 100, burst: 100 } },
        }),
    });
    try {
      const redeem = async (sub: string) =>
        postForm(
          `${sts.url}/token`,
          { grant_type: JWT_BEARER, assertion: await signIdJag(keys.idp, sts.url, { sub }) },
          { authorization: basicAuth("billing-agent", TEST_SECRET) },
        );
      assert.equal((await redeem("u1")).body.error, "authorization_pending");
      assert.equal((await redeem("u2")).body.error, "authorization_pending");
      const capped = await redeem("u3");
      assert.equal(capped.status, 429);
      assert.equal(capped.body.error, "slow_down");
      assert.equal(
        capped.body.error_description,
        "this agent already has 2 pending approvals, the most allowed; retry when one is decided or expires",
      );
      assert.match(capped.headers.get("retry-after") ?? "", /^[1-9][0-9]*$/);
      const pending = await sts.handle.db
        .selectFrom("approvals")
        .select("subject")
        .where("client_id", "=", "billing-agent")
        .where("status", "=", "pending")
        .execute();
      assert.deepEqual(pending.map((row) => row.subject).sort(), ["u1", "u2"]);
      // A repeat of a recorded request still finds its approval (no new row, so no cap).
      assert.equal((await redeem("u1")).body.error, "authorization_pending");
    } finally {
      await sts.stop();
    }
  });
});
