import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import {
  calculateJwkThumbprint,
  decodeJwt,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { createVerifier } from "../../../gateway-verifier/src/index.js";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import { ConfigError, loadConfig } from "../../../sts/src/config/load.js";
import {
  basicAuth,
  LIFTED_APPROVAL_BOUNDS,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import {
  ACCESS_TOKEN_TYPE,
  agentTask,
  exchange,
  insertApproval,
  JWT_TOKEN_TYPE,
} from "../../helpers/exchange.js";

const run = promisify(execFile);
type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
type Claims = Omit<JWTPayload, "iat"> & { iat?: number | null };
const root = path.resolve(import.meta.dirname, "../../..");
const CRM = "https://crm.example.test";
const LEDGER = "https://ledger.example.test";
const BIG = "https://big.example.test";
/** One corporate IdP, trusted through two entries: agents' subject/actor tokens vs humans' approver tokens. */
const IDP = "https://idp.example.test";
/** A second IdP trusted for subject tokens only (not for actor tokens, so its `act` claims never count). */
const PARTNER = "https://partner-idp.example.test";
const SUBJECT_AUDIENCE = "countersign";
const APPROVER_AUDIENCE = "countersign-approvers";
const STRICT_APPROVER_AUDIENCE = "countersign-approvers-strict";

/** Scopes of a resource whose every token would be too large (a careless operator's config). */
const BIG_SCOPES = Array.from({ length: 80 }, (_, i) => `big:${"s".repeat(100)}${i}`);

interface Answer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

async function call<T = Record<string, unknown>>(
  base: string,
  method: string,
  pathname: string,
  authorization: string | undefined,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Answer<T>> {
  const response = await fetch(`${base}${pathname}`, {
    method,
    headers: {
      ...(authorization === undefined ? {} : { authorization }),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: (text ? JSON.parse(text) : {}) as T };
}

function assertError(answer: Answer<object>, status: number, error: string, description: string | RegExp) {
  const body = answer.body as Record<string, unknown>;
  assert.equal(answer.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
  if (typeof description === "string") assert.equal(body.error_description, description);
  else assert.match(String(body.error_description), description);
}

function trustedIssuers(jwk: JWK, partnerJwk: JWK) {
  return [
    { issuer: IDP, jwks: { keys: [jwk] }, audience: SUBJECT_AUDIENCE, usage: ["subject", "actor"] },
    {
      issuer: IDP,
      jwks: { keys: [jwk] },
      audience: APPROVER_AUDIENCE,
      usage: ["approver"],
      approver_claim: { name: "roles", value: "approver" },
      approver_max_age_seconds: 900,
    },
    {
      issuer: IDP,
      jwks: { keys: [jwk] },
      audience: STRICT_APPROVER_AUDIENCE,
      usage: ["approver"],
      approver_claim: { name: "roles", value: "approver" },
      approver_max_age_seconds: 600,
      require_auth_time: true,
    },
    {
      issuer: PARTNER,
      jwks: { keys: [partnerJwk] },
      audience: SUBJECT_AUDIENCE,
      usage: ["subject"],
      max_token_age_seconds: 600,
    },
  ];
}

describe("trusted issuers: the configuration refuses a shared approver credential", () => {
  const jwk = {
    kty: "EC",
    crv: "P-256",
    x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
  };
  const load = (trusted: unknown[]) =>
    loadConfig({ COUNTERSIGN_DATA_DIR: tmpdir() }, { trusted_issuers: trusted, dev_mode: false });
  const issuesOf = (trusted: unknown[]) => {
    try {
      load(trusted);
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.issues;
    }
    assert.fail("the configuration was accepted");
  };

  test("an entry with approver usage and another usage is refused, naming trusted_issuers[i].usage", () => {
    assert.deepEqual(
      issuesOf([
        { issuer: IDP, jwks: { keys: [jwk] }, audience: SUBJECT_AUDIENCE, usage: ["actor"] },
        {
          issuer: IDP,
          jwks: { keys: [jwk] },
          audience: `${SUBJECT_AUDIENCE}-x`,
          usage: ["subject", "approver"],
        },
      ]),
      [
        "trusted_issuers[1].usage: approver may not be combined with another usage: a human's approval " +
          "credential must have its own audience, never one an agent's subject or actor token carries (list " +
          "the issuer twice, with a separate audience for approvers)",
      ],
    );
  });

  test("two entries with the same (issuer, audience) are refused; distinct audiences load", () => {
    assert.deepEqual(
      issuesOf([
        { issuer: IDP, jwks: { keys: [jwk] }, audience: SUBJECT_AUDIENCE, usage: ["subject"] },
        { issuer: IDP, jwks: { keys: [jwk] }, audience: SUBJECT_AUDIENCE, usage: ["approver"] },
      ]),
      [
        "trusted_issuers[1].audience: another entry has the same issuer and audience: each (issuer, audience) may appear once",
      ],
    );
    const config = load([
      { issuer: IDP, jwks: { keys: [jwk] }, audience: SUBJECT_AUDIENCE, usage: ["subject", "actor"] },
      { issuer: IDP, jwks: { keys: [jwk] }, audience: APPROVER_AUDIENCE, usage: ["approver"] },
    ]);
    assert.equal(config.trusted_issuers.length, 2);
  });

  test("approver-only keys on a subject entry are refused as misplaced", () => {
    assert.deepEqual(
      issuesOf([
        {
          issuer: IDP,
          jwks: { keys: [jwk] },
          audience: SUBJECT_AUDIENCE,
          usage: ["subject"],
          approver_max_age_seconds: 60,
          require_auth_time: true,
        },
      ]),
      [
        "trusted_issuers[0].approver_max_age_seconds: applies only to an entry with approver usage",
        "trusted_issuers[0].require_auth_time: applies only to an entry with approver usage",
      ],
    );
  });

  test("`countersign serve` with a shared approver entry exits 78 before listening, naming the key", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "countersign-boundary-"));
    try {
      const file = path.join(dir, "countersign.json");
      writeFileSync(
        file,
        JSON.stringify({
          trusted_issuers: [
            {
              issuer: IDP,
              jwks: { keys: [jwk] },
              audience: SUBJECT_AUDIENCE,
              usage: ["subject", "approver"],
            },
          ],
        }),
      );
      const outcome = await run(process.execPath, [path.join(root, "bin/countersign.js"), "serve"], {
        env: { ...process.env, COUNTERSIGN_CONFIG: file, COUNTERSIGN_DATA_DIR: dir, PORT: "0" },
        timeout: 30_000,
      }).then(
        () => ({ code: 0, stderr: "" }),
        (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
      );
      assert.equal(outcome.code, 78);
      assert.match(
        outcome.stderr,
        /trusted_issuers\[0\]\.usage: approver may not be combined with another usage/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

for (const engine of testEngines()) {
  describe(`the approval boundary against a hostile agent, on ${engine}`, () => {
    let sts: TestApp;
    let idpKey: PrivateKey;
    let partnerKey: PrivateKey;
    let agent: string;

    const now = () => Math.floor(Date.now() / 1000);

    /** A JWT from one of the test's IdPs. `iat: null` leaves `iat` out. */
    function idpToken(
      claims: Claims,
      options: { issuer?: string; audience?: string | string[]; key?: PrivateKey } = {},
    ): Promise<string> {
      const { iat, ...rest } = claims;
      const jwt = new SignJWT({ ...rest })
        .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
        .setIssuer(options.issuer ?? IDP)
        .setAudience(options.audience ?? SUBJECT_AUDIENCE)
        .setExpirationTime(now() + 3600)
        .setJti(randomUUID());
      if (iat !== null) jwt.setIssuedAt(iat ?? now());
      return jwt.sign(options.key ?? (options.issuer === PARTNER ? partnerKey : idpKey));
    }

    const subjectToken = (sub: string, extra: Claims = {}) => idpToken({ sub, ...extra });
    const approverToken = (sub: string, extra: Claims = {}, audience = APPROVER_AUDIENCE) =>
      idpToken({ sub, roles: ["approver"], ...extra }, { audience });

    const api = <T = Record<string, unknown>>(
      method: string,
      pathname: string,
      token: string | undefined,
      body?: unknown,
      headers?: Record<string, string>,
    ) =>
      call<T>(sts.url, method, pathname, token === undefined ? undefined : `Bearer ${token}`, body, headers);

    async function requestApproval(body: Record<string, unknown> = {}): Promise<ApprovalJson> {
      const answer = await api<ApprovalJson>("POST", "/approvals", agent, {
        resource: CRM,
        scope: "crm:read",
        task: "sync contacts",
        ...body,
      });
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      return answer.body;
    }

    async function lastRefusalReason(
      approvalId: string | null,
      event = "token_exchange",
    ): Promise<string | null> {
      let query = sts.app.services.db
        .selectFrom("audit_events")
        .select(["reason"])
        .where("event", "=", event)
        .where("outcome", "=", "refused")
        .orderBy("id", "desc")
        .limit(1);
      if (approvalId !== null) query = query.where("approval_id", "=", approvalId);
      return (await query.executeTakeFirst())?.reason ?? null;
    }

    before(async () => {
      const idp = await generateKeyPair("ES256", { extractable: true });
      const partner = await generateKeyPair("ES256", { extractable: true });
      idpKey = idp.privateKey;
      partnerKey = partner.privateKey;
      const jwk = { ...(await exportJWK(idp.publicKey)), kid: "idp-1", alg: "ES256" };
      const partnerJwk = { ...(await exportJWK(partner.publicKey)), kid: "idp-1", alg: "ES256" };
      sts = await startTestApp({
        engine,
        env: { COUNTERSIGN_KEK: randomBytes(32).toString("base64url") },
        config: {
          resources: [
            { id: CRM, scopes: ["crm:read", "crm:write"], max_ttl_seconds: 300 },
            { id: LEDGER, scopes: ["ledger:read"], tags: { department: "finance" } },
            { id: BIG, scopes: BIG_SCOPES },
          ],
          clients: [
            {
              client_id: "billing-agent",
              client_secret: TEST_SECRET,
              token_endpoint_auth_method: "client_secret_basic",
            },
          ],
          trusted_issuers: trustedIssuers(jwk, partnerJwk),
          approvals: LIFTED_APPROVAL_BOUNDS,
          dev_mode: false,
        },
      });
      const answer = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      agent = answer.body.access_token as string;
    });
    after(() => sts.stop());

    test("the agent cannot approve its own request with the human's subject token it holds", async () => {
      const approval = await requestApproval({
        max_tokens: 1000,
        ttl_seconds: 30 * 86_400,
        subject: "alice@example.test",
        subject_issuer: IDP,
      });
      const alicesSubjectToken = await subjectToken("alice@example.test", { roles: ["approver"] });
      assertError(
        await api("POST", `/approvals/${approval.id}/approve`, alicesSubjectToken, {}),
        401,
        "invalid_token",
        "tokens with this issuer and audience are not trusted for approver use",
      );
      const still = await api<ApprovalJson>("GET", `/approvals/${approval.id}`, agent);
      assert.equal(still.body.status, "pending");
      assert.equal(still.body.approved_by, null);
      // And no token comes of it.
      const refused = await exchange(sts.url, {
        subject_token: alicesSubjectToken,
        authorization_details: agentTask(approval.id),
      });
      assert.equal(refused.status, 400);
      assert.equal(refused.body.error, "authorization_pending");
    });

    test("the approver audience approves; an approver token is no subject token; both audiences at once is refused", async () => {
      const approval = await requestApproval();
      const alice = await approverToken("alice@example.test");
      const approved = await api<ApprovalJson>("POST", `/approvals/${approval.id}/approve`, alice, {});
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      assert.equal(approved.body.approved_by, "alice@example.test");

      const asSubject = await exchange(sts.url, {
        subject_token: alice,
        authorization_details: agentTask(approval.id),
      });
      assertError(
        asSubject,
        400,
        "invalid_grant",
        "tokens with this issuer and audience are not trusted for subject use",
      );
      assert.equal(await lastRefusalReason(approval.id), "subject_token_usage_not_allowed");

      const both = await idpToken(
        { sub: "alice@example.test", roles: ["approver"] },
        { audience: [SUBJECT_AUDIENCE, APPROVER_AUDIENCE] },
      );
      const pendingOne = await requestApproval();
      assertError(
        await api("POST", `/approvals/${pendingOne.id}/approve`, both, {}),
        401,
        "invalid_token",
        "the approver token carries the audiences of several trusted-issuer entries; it must carry exactly one",
      );
      assertError(
        await exchange(sts.url, { subject_token: both, authorization_details: agentTask(approval.id) }),
        400,
        "invalid_grant",
        "the subject token carries the audiences of several trusted-issuer entries; it must carry exactly one",
      );
    });

    test("approver tokens must be fresh: iat and auth_time within approver_max_age_seconds; auth_time when required", async () => {
      const approval = await requestApproval();
      const approve = (token: string) => api("POST", `/approvals/${approval.id}/approve`, token, {});
      const stale = await approve(await approverToken("alice@example.test", { iat: now() - 1000 }));
      assertError(
        stale,
        401,
        "invalid_token",
        "the approver's token (iat) is older than 900 seconds: sign in again to decide approvals",
      );
      assert.match(
        String(stale.headers.get("www-authenticate")),
        /^Bearer realm="countersign", error="invalid_token"/,
      );
      // A refreshed token: new iat, old sign-in.
      assertError(
        await approve(await approverToken("alice@example.test", { auth_time: now() - 1000 })),
        401,
        "invalid_token",
        "the approver's sign-in (auth_time) is older than 900 seconds: sign in again to decide approvals",
      );
      assertError(
        await approve(await approverToken("alice@example.test", { iat: null })),
        401,
        "invalid_token",
        "the approver token has no iat claim: its age is unknown",
      );
      assertError(
        await approve(await approverToken("alice@example.test", {}, STRICT_APPROVER_AUDIENCE)),
        401,
        "invalid_token",
        "the approver token has no auth_time claim, which this issuer entry requires",
      );
      assertError(
        await approve(await approverToken("alice@example.test", { iat: now() + 600 })),
        401,
        "invalid_token",
        "the approver token's iat lies in the future: check the issuer's clock",
      );
      const fresh = await approve(
        await approverToken("alice@example.test", { auth_time: now() - 60 }, STRICT_APPROVER_AUDIENCE),
      );
      assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
    });

    test("an approver-audience token without the approver claim is 403 insufficient_scope, not 401", async () => {
      const approval = await requestApproval();
      const roleless = await api(
        "POST",
        `/approvals/${approval.id}/approve`,
        await approverToken("mallory@example.test", { roles: ["staff"] }),
        {},
      );
      const description =
        "the token's roles claim does not include approver: this account may not decide approvals";
      assertError(roleless, 403, "insufficient_scope", description);
      assert.equal(
        roleless.headers.get("www-authenticate"),
        `Bearer realm="countersign", error="insufficient_scope", error_description="the token's roles claim does not include approver: this account may not decide approvals"`,
      );
    });

    test("a DPoP-bound approver credential needs a DPoP proof of its key for this very request", async () => {
      const approval = await requestApproval();
      const holder = await generateKeyPair("ES256", { extractable: true });
      const holderJwk = await exportJWK(holder.publicKey);
      const jkt = await calculateJwkThumbprint(holderJwk);
      const bound = await approverToken("alice@example.test", { cnf: { jkt } });
      const target = `/approvals/${approval.id}/approve`;
      const proof = async (htu: string, key = holder.privateKey, jwk = holderJwk) =>
        new SignJWT({
          htm: "POST",
          htu,
          jti: randomUUID(),
          ath: Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(bound))).toString(
            "base64url",
          ),
        })
          .setProtectedHeader({ typ: "dpop+jwt", alg: "ES256", jwk })
          .setIssuedAt()
          .sign(key);

      assertError(
        await api("POST", target, bound, {}),
        401,
        "invalid_token",
        "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof of its key",
      );
      // A proof made for another URL, or by another key, does not do.
      const dpopCall = async (proofJwt: string) =>
        call(sts.url, "POST", target, `DPoP ${bound}`, {}, { dpop: proofJwt });
      assertError(
        await dpopCall(await proof(`${sts.url}/approvals/${approval.id}/deny`)),
        401,
        "invalid_token",
        "the DPoP proof is not acceptable (dpop_htu_mismatch)",
      );
      const other = await generateKeyPair("ES256", { extractable: true });
      assertError(
        await dpopCall(
          await proof(`${sts.url}${target}`, other.privateKey, await exportJWK(other.publicKey)),
        ),
        401,
        "invalid_token",
        "the DPoP proof is not acceptable (dpop_key_mismatch)",
      );
      const good = await proof(`${sts.url}${target}`);
      const approved = await dpopCall(good);
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      // The same proof again is a replay.
      const second = await requestApproval();
      assertError(
        await call(sts.url, "POST", `/approvals/${second.id}/approve`, `DPoP ${bound}`, {}, { dpop: good }),
        401,
        "invalid_token",
        /^the DPoP proof is not acceptable \(dpop_(htu_mismatch|proof_replayed)\)$/,
      );
    });

    test("a DPoP-bound agent credential sent as Bearer is refused at the approval API", async () => {
      const holder = await generateKeyPair("ES256", { extractable: true });
      const jwk = await exportJWK(holder.publicKey);
      const tokenProof = await new SignJWT({ htm: "POST", htu: `${sts.url}/token`, jti: randomUUID() })
        .setProtectedHeader({ typ: "dpop+jwt", alg: "ES256", jwk })
        .setIssuedAt()
        .sign(holder.privateKey);
      const minted = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET), dpop: tokenProof },
      );
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(minted.body.token_type, "DPoP");
      const bound = minted.body.access_token as string;
      assert.equal((decodeJwt(bound).cnf as { jkt: string }).jkt, await calculateJwkThumbprint(jwk));
      assertError(
        await api("POST", "/approvals", bound, { resource: CRM, scope: "crm:read", task: "x" }),
        401,
        "invalid_token",
        "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof of its key",
      );
    });

    test("act in a subject token counts only from an issuer trusted for actor tokens", async () => {
      const approval = await insertApproval(sts.handle.db, { subject: null });
      const fromPartner = await idpToken(
        { sub: "alice@example.test", act: { sub: "root-agent" } },
        { issuer: PARTNER },
      );
      assertError(
        await exchange(sts.url, { subject_token: fromPartner, authorization_details: agentTask(approval) }),
        400,
        "invalid_grant",
        "the subject token carries an act claim, but its issuer is not trusted for actor tokens",
      );
      assert.equal(await lastRefusalReason(approval), "subject_act_untrusted");
      const fromIdp = await subjectToken("alice@example.test", { act: { sub: "planner-agent" } });
      const minted = await exchange(sts.url, {
        subject_token: fromIdp,
        authorization_details: agentTask(approval),
      });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.deepEqual(decodeJwt(minted.body.access_token as string).act, { sub: "planner-agent" });
    });

    test("subject binding is (issuer, sub): subject_issuer required with several subject issuers, and compared", async () => {
      assertError(
        await api("POST", "/approvals", agent, {
          resource: CRM,
          scope: "crm:read",
          task: "x",
          subject: "alice",
        }),
        400,
        "invalid_request",
        "subject_issuer: is required with subject, because several issuers are trusted for subject tokens",
      );
      assertError(
        await api("POST", "/approvals", agent, {
          resource: CRM,
          scope: "crm:read",
          task: "x",
          subject: "alice",
          subject_issuer: "https://evil.example.test",
        }),
        400,
        "invalid_request",
        "subject_issuer: is not an issuer trusted for subject tokens",
      );
      assertError(
        await api("POST", "/approvals", agent, {
          resource: CRM,
          scope: "crm:read",
          task: "x",
          subject_issuer: IDP,
        }),
        400,
        "invalid_request",
        "subject_issuer: may only be given with subject",
      );
      const approval = await requestApproval({ subject: "alice", subject_issuer: PARTNER });
      assert.equal(approval.subject_issuer, PARTNER);
      const approved = await api(
        "POST",
        `/approvals/${approval.id}/approve`,
        await approverToken("bob@example.test"),
        {},
      );
      assert.equal(approved.status, 200);
      // Another IdP's "alice" is another person.
      assertError(
        await exchange(sts.url, {
          subject_token: await subjectToken("alice"),
          authorization_details: agentTask(approval.id),
        }),
        400,
        "invalid_grant",
        "the subject token's subject is not the approval's subject",
      );
      const partnerAlice = await idpToken({ sub: "alice" }, { issuer: PARTNER });
      const minted = await exchange(sts.url, {
        subject_token: partnerAlice,
        authorization_details: agentTask(approval.id),
      });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(decodeJwt(minted.body.access_token as string).sub, "alice");
      // A chained exchange of the minted token stays within the binding.
      const chained = await exchange(sts.url, {
        subject_token: minted.body.access_token as string,
        subject_token_type: ACCESS_TOKEN_TYPE,
        authorization_details: agentTask(approval.id),
      });
      assert.equal(chained.status, 200, JSON.stringify(chained.body));
    });

    test("subject tokens: iat in the future is refused; max_token_age_seconds refuses old and iat-less tokens", async () => {
      const approval = await insertApproval(sts.handle.db, { subject: null });
      const attempt = (token: string) =>
        exchange(sts.url, {
          subject_token: token,
          subject_token_type: JWT_TOKEN_TYPE,
          authorization_details: agentTask(approval),
        });
      assertError(
        await attempt(await subjectToken("alice", { iat: now() + 600 })),
        400,
        "invalid_grant",
        "the subject token's iat lies in the future: check the issuer's clock",
      );
      assert.equal(await lastRefusalReason(approval), "subject_token_not_yet_valid");
      assertError(
        await attempt(await idpToken({ sub: "alice", iat: now() - 700 }, { issuer: PARTNER })),
        400,
        "invalid_grant",
        "the subject token was issued more than 600 seconds ago",
      );
      assert.equal(await lastRefusalReason(approval), "subject_token_too_old");
      assertError(
        await attempt(await idpToken({ sub: "alice", iat: null }, { issuer: PARTNER })),
        400,
        "invalid_grant",
        "the subject token has no iat claim, and its issuer entry sets max_token_age_seconds",
      );
      assert.equal(
        (await attempt(await idpToken({ sub: "alice", iat: now() - 500 }, { issuer: PARTNER }))).status,
        200,
      );
      // The same old token from an issuer without the bound is fine (only exp applies there).
      assert.equal((await attempt(await subjectToken("alice", { iat: now() - 700 }))).status, 200);
      // An actor token with a future iat is refused too.
      assertError(
        await exchange(sts.url, {
          subject_token: await subjectToken("alice"),
          actor_token: await subjectToken("planner", { iat: now() + 600 }),
          actor_token_type: JWT_TOKEN_TYPE,
          authorization_details: agentTask(approval),
        }),
        400,
        "invalid_grant",
        "the actor token's iat lies in the future: check the issuer's clock",
      );
    });

    test("deny and revoke are decided by policy like approve (department rule)", async () => {
      const ask = () => requestApproval({ resource: LEDGER, scope: "ledger:read" });
      const sales = await approverToken("carol@example.test", { department: "sales" });
      const finance = await approverToken("dave@example.test", { department: "finance" });
      const first = await ask();
      assertError(
        await api("POST", `/approvals/${first.id}/deny`, sales, {}),
        403,
        "access_denied",
        "policy approver-department forbids denying this approval: only an approver of the resource's department may decide access to it",
      );
      assert.equal(await lastRefusalReason(first.id, "approval.deny"), "policy_denied");
      assert.equal((await api("POST", `/approvals/${first.id}/deny`, finance, {})).status, 200);
      const second = await ask();
      assert.equal((await api("POST", `/approvals/${second.id}/approve`, finance, {})).status, 200);
      assertError(
        await api("POST", `/approvals/${second.id}/revoke`, sales, { reason: "no" }),
        403,
        "access_denied",
        "policy approver-department forbids revoking this approval: only an approver of the resource's department may decide access to it",
      );
      const read = await api<ApprovalJson>("GET", `/approvals/${second.id}`, agent);
      assert.equal(read.body.status, "approved");
      assert.equal((await api("POST", `/approvals/${second.id}/revoke`, finance, {})).status, 200);
    });

    test("a long non-ASCII task never makes a token the gateway refuses; the approval keeps the whole text", async () => {
      const task = `${"€".repeat(1990)}\u0007\u001b[2Kok`;
      const approval = await insertApproval(sts.handle.db, { subject: null, task });
      const minted = await exchange(sts.url, {
        subject_token: await subjectToken("alice"),
        authorization_details: agentTask(approval),
      });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      const token = minted.body.access_token as string;
      assert.ok(token.length <= 8192, `token is ${token.length} bytes`);
      const [detail] = decodeJwt(token).authorization_details as { task: string; task_truncated?: boolean }[];
      assert.equal(detail?.task, "€".repeat(170));
      assert.equal(detail?.task_truncated, true);
      const row = await sts.handle.db
        .selectFrom("approvals")
        .select(["task"])
        .where("id", "=", approval)
        .executeTakeFirstOrThrow();
      assert.equal(row.task, task);
      const verifier = createVerifier({
        issuer: sts.config.issuer,
        audience: CRM,
        jwksUri: `${sts.url}/jwks`,
        rateLimit: false,
      });
      const verified = await verifier.verify({
        authorization: `Bearer ${token}`,
        method: "GET",
        url: `${CRM}/x`,
        requiredScopes: ["crm:read"],
      });
      assert.equal(verified.ok, true, JSON.stringify(verified));
    });

    test("a token that would exceed 8192 bytes is refused before the budget is taken", async () => {
      const approval = await insertApproval(sts.handle.db, {
        subject: null,
        resource: BIG,
        scope: BIG_SCOPES.join(" "),
      });
      const refused = await exchange(sts.url, {
        subject_token: await subjectToken("alice"),
        resource: BIG,
        authorization_details: agentTask(approval),
      });
      assertError(
        refused,
        400,
        "invalid_grant",
        "the access token would exceed 8192 bytes (long scope, subject or delegation chain)",
      );
      assert.equal(await lastRefusalReason(approval), "token_too_large");
      const row = await sts.handle.db
        .selectFrom("approvals")
        .select(["tokens_issued"])
        .where("id", "=", approval)
        .executeTakeFirstOrThrow();
      assert.equal(row.tokens_issued, 0);
      const small = await exchange(sts.url, {
        subject_token: await subjectToken("alice"),
        resource: BIG,
        scope: BIG_SCOPES.slice(0, 3).join(" "),
        authorization_details: agentTask(approval),
      });
      assert.equal(small.status, 200, JSON.stringify(small.body));
    });
  });
}

describe("the example stale-identity policy refuses stale workload identities", () => {
  let sts: TestApp;
  let key: PrivateKey;
  const now = () => Math.floor(Date.now() / 1000);
  before(async () => {
    const pair = await generateKeyPair("ES256", { extractable: true });
    key = pair.privateKey;
    sts = await startTestApp({
      engine: "pglite",
      config: {
        resources: [{ id: CRM, scopes: ["crm:read"] }],
        clients: [
          {
            client_id: "billing-agent",
            client_secret: TEST_SECRET,
            token_endpoint_auth_method: "client_secret_basic",
          },
        ],
        trusted_issuers: [
          {
            issuer: IDP,
            jwks: { keys: [{ ...(await exportJWK(pair.publicKey)), kid: "idp-1", alg: "ES256" }] },
            audience: SUBJECT_AUDIENCE,
            usage: ["subject"],
          },
        ],
        policies: [
          path.join(root, "policies/default.cedar"),
          path.join(root, "policies/examples/stale_identity.cedar"),
        ],
        dev_mode: false,
      },
    });
  });
  after(() => sts.stop());

  test("an hour-old subject token (exp still ahead) and one without iat are refused; a fresh one passes", async () => {
    const approval = await insertApproval(sts.handle.db, { subject: null, scope: "crm:read" });
    const attempt = async (iat: number | null) => {
      const jwt = new SignJWT({})
        .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
        .setIssuer(IDP)
        .setAudience(SUBJECT_AUDIENCE)
        .setSubject("alice")
        .setExpirationTime(now() + 3600);
      if (iat !== null) jwt.setIssuedAt(iat);
      return exchange(sts.url, {
        subject_token: await jwt.sign(key),
        authorization_details: agentTask(approval),
      });
    };
    const refusal =
      "forbidden by policy stale-workload-identity: the subject token was issued more than an hour ago (or carries no iat); get a fresh one";
    assertError(await attempt(now() - 3700), 400, "invalid_grant", refusal);
    assertError(await attempt(null), 400, "invalid_grant", refusal);
    const fresh = await attempt(now() - 60);
    assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
  });
});
