import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Approval } from "../../../sts/src/db/schema.js";
import {
  accessTokenClaims,
  actDepth,
  assertNarrowing,
  assertSubjectBinding,
  chainAct,
  grantedScopes,
  issueRefusal,
  taskClaim,
  tighterRateLimit,
  tokenLifetime,
} from "../../../sts/src/exchange/rules.js";
import type { IssuedTokenBounds, SubjectIdentity } from "../../../sts/src/exchange/token_validators.js";
import { isRefusal } from "../../../sts/src/oidc/refusal.js";

/** Runs `fn` and returns the refusal it threw as {status, error, reason, description}. */
function refusalOf(fn: () => unknown) {
  try {
    fn();
  } catch (error) {
    assert.ok(isRefusal(error), `not a refusal: ${String(error)}`);
    return {
      status: error.status,
      error: error.error,
      reason: error.reason,
      description: error.error_description,
    };
  }
  assert.fail("no refusal");
}

const NOW = Date.parse("2026-11-28T12:00:00Z");

function approval(values: Partial<Approval> = {}): Approval {
  return {
    id: "apr_0000000000000000000000",
    status: "approved",
    client_id: "billing-agent",
    resource: "https://crm.example.test",
    scope: "crm:read crm:write",
    requested_scope: "crm:read crm:write",
    task: "reconcile",
    subject: null,
    subject_issuer: null,
    max_tokens: 10,
    tokens_issued: 0,
    rate_limit: null,
    requested_by: "billing-agent",
    approved_by: "bob",
    decided_by: "idp#bob",
    decision_reason: null,
    created_at: new Date(NOW - 60_000),
    decided_at: new Date(NOW - 30_000),
    expires_at: new Date(NOW + 3_600_000),
    revoked_at: null,
    lapsed_at: null,
    tools: null,
    resources: null,
    prompts: null,
    call_tool: null,
    call_arguments: null,
    call_arguments_digest: null,
    ...values,
  };
}

function subject(values: Partial<SubjectIdentity> = {}): SubjectIdentity {
  return {
    sub: "alice",
    issuer: "https://idp.example.test",
    act: undefined,
    bounds: undefined,
    issuedAt: undefined,
    ...values,
  };
}

const bounds: IssuedTokenBounds = {
  audience: "https://crm.example.test",
  scopes: ["crm:read"],
  approvalId: "apr_0000000000000000000000",
  clientId: "billing-agent",
  exp: NOW / 1000 + 120,
  jkt: undefined,
};

describe("the token exchange's rules (no HTTP)", () => {
  test("subject binding compares issuer and sub; a chained token skips only the issuer", () => {
    const bound = approval({ subject: "alice", subject_issuer: "https://idp.example.test" });
    assert.doesNotThrow(() => assertSubjectBinding(bound, subject()));
    assert.deepEqual(
      refusalOf(() => assertSubjectBinding(bound, subject({ issuer: "https://other.example.test" }))),
      {
        status: 400,
        error: "invalid_grant",
        reason: "subject_mismatch",
        description: "the subject token's subject is not the approval's subject",
      },
    );
    assert.equal(
      refusalOf(() => assertSubjectBinding(bound, subject({ sub: "mallory" }))).reason,
      "subject_mismatch",
    );
    assert.doesNotThrow(() =>
      assertSubjectBinding(bound, subject({ issuer: "http://sts.example.test", bounds })),
    );
    assert.doesNotThrow(() => assertSubjectBinding(approval(), subject({ sub: "anyone" })));
  });

  test("a chained token narrows: same approval, client, resource and DPoP key", () => {
    const request = {
      approvalId: bounds.approvalId,
      clientId: "billing-agent",
      resourceId: "https://crm.example.test",
      dpopThumbprint: undefined,
    };
    assert.doesNotThrow(() => assertNarrowing(bounds, request));
    assert.doesNotThrow(() => assertNarrowing(undefined, { ...request, clientId: "x" }));
    assert.equal(
      refusalOf(() => assertNarrowing(bounds, { ...request, clientId: "other" })).reason,
      "subject_token_other_approval",
    );
    assert.deepEqual(
      refusalOf(() => assertNarrowing(bounds, { ...request, resourceId: "https://mail.example.test" })),
      {
        status: 400,
        error: "invalid_target",
        reason: "subject_token_other_resource",
        description: "the subject token is for another resource",
      },
    );
    assert.equal(
      refusalOf(() => assertNarrowing({ ...bounds, jkt: "key-a" }, { ...request, dpopThumbprint: "key-b" }))
        .reason,
      "subject_token_dpop_key_mismatch",
    );
  });

  test("scopes: requested ⊆ approval ∩ resource ∩ chained token; none requested means all allowed", () => {
    const base = {
      approvalScope: "crm:read crm:write",
      resourceScopes: ["crm:read", "crm:write"],
      bounds: undefined,
    };
    assert.deepEqual(grantedScopes({ ...base, requested: [] }), ["crm:read", "crm:write"]);
    assert.deepEqual(grantedScopes({ ...base, requested: ["crm:write"] }), ["crm:write"]);
    assert.deepEqual(grantedScopes({ ...base, bounds, requested: [] }), ["crm:read"]);
    assert.deepEqual(
      refusalOf(() => grantedScopes({ ...base, bounds, requested: ["crm:write"] })),
      {
        status: 400,
        error: "invalid_scope",
        reason: "scope_not_approved",
        description: "scope not within the approval: crm:write",
      },
    );
    assert.equal(
      refusalOf(() => grantedScopes({ ...base, resourceScopes: ["crm:admin"], requested: [] })).description,
      "scope not within the approval: (none)",
    );
  });

  test("lifetime: the smallest cap wins; an approval with under a second left is expired", () => {
    const input = {
      resourceMaxTtlSeconds: 300,
      defaultTtlSeconds: 600,
      maxTtlSeconds: 900,
      approvalExpiresAt: new Date(NOW + 3_600_000),
      boundsExp: undefined,
      nowMs: NOW,
    };
    assert.equal(tokenLifetime(input), 300);
    assert.equal(tokenLifetime({ ...input, resourceMaxTtlSeconds: undefined }), 600);
    assert.equal(tokenLifetime({ ...input, approvalExpiresAt: new Date(NOW + 42_500) }), 42);
    assert.equal(tokenLifetime({ ...input, boundsExp: NOW / 1000 + 17 }), 17);
    assert.equal(
      refusalOf(() => tokenLifetime({ ...input, approvalExpiresAt: new Date(NOW + 900) })).reason,
      "approval_expired",
    );
  });

  test("act: the actor on top, the prior chain nested, bounded by the depth", () => {
    const prior = { sub: "planner", act: { sub: "root" } };
    assert.deepEqual(chainAct({ sub: "worker", iss: "https://idp" }, prior, 4), {
      sub: "worker",
      iss: "https://idp",
      act: prior,
    });
    assert.equal(chainAct(undefined, undefined, 4), undefined);
    assert.deepEqual(chainAct(undefined, prior, 4), prior);
    assert.deepEqual(
      refusalOf(() => chainAct({ sub: "worker" }, prior, 2)),
      {
        status: 400,
        error: "invalid_grant",
        reason: "delegation_too_deep",
        description: "the delegation chain would exceed 2 actors",
      },
    );
    assert.equal(actDepth({ sub: "a", act: { sub: "b", act: { sub: "c" } } }), 3);
  });

  test("act: when both tokens carry act, the actor's own chain stays under the actor and the subject token's chain nests deepest", () => {
    const actor = {
      sub: "worker",
      iss: "https://idp",
      act: { sub: "worker-runner", act: { sub: "scheduler" } },
    };
    const prior = { sub: "planner", iss: "https://idp", act: { sub: "root" } };
    assert.deepEqual(chainAct(actor, prior, 5), {
      sub: "worker",
      iss: "https://idp",
      act: {
        sub: "worker-runner",
        act: { sub: "scheduler", act: { sub: "planner", iss: "https://idp", act: { sub: "root" } } },
      },
    });
    // The presented claims are left as they were.
    assert.deepEqual(actor, {
      sub: "worker",
      iss: "https://idp",
      act: { sub: "worker-runner", act: { sub: "scheduler" } },
    });
    assert.deepEqual(prior, { sub: "planner", iss: "https://idp", act: { sub: "root" } });
    // Only the actor's own chain: it stays as it is.
    assert.deepEqual(chainAct(actor, undefined, 3), actor);
  });

  test("act: the depth bound counts the actor's own chain and the subject token's chain together", () => {
    const actor = { sub: "worker", act: { sub: "worker-runner" } };
    const prior = { sub: "planner", act: { sub: "root" } };
    assert.equal(actDepth(chainAct(actor, prior, 4)), 4);
    assert.deepEqual(
      refusalOf(() => chainAct(actor, prior, 3)),
      {
        status: 400,
        error: "invalid_grant",
        reason: "delegation_too_deep",
        description: "the delegation chain would exceed 3 actors",
      },
    );
    assert.deepEqual(
      refusalOf(() => chainAct(actor, undefined, 1)),
      {
        status: 400,
        error: "invalid_grant",
        reason: "delegation_too_deep",
        description: "the delegation chain would exceed 1 actors",
      },
    );
  });

  test("rate limit: the tighter of each member", () => {
    assert.deepEqual(tighterRateLimit({ per_second: 5, burst: 20 }, { per_second: 10, burst: 10 }), {
      per_second: 5,
      burst: 10,
    });
    assert.deepEqual(tighterRateLimit(null, { per_second: 1, burst: 2 }), { per_second: 1, burst: 2 });
    assert.equal(tighterRateLimit(null, undefined), undefined);
  });

  test("task: whole characters within 512 bytes of JSON; controls count as their escapes", () => {
    assert.deepEqual(taskClaim("short"), { task: "short", truncated: false });
    assert.deepEqual(taskClaim("€".repeat(200)), { task: "€".repeat(170), truncated: true });
    assert.deepEqual(taskClaim("\u0007".repeat(100)), { task: "\u0007".repeat(85), truncated: true });
    assert.deepEqual(taskClaim("a😀b", 5), { task: "a😀", truncated: true });
  });

  test("claims: exactly the reference's members, optional ones only when set", () => {
    const content = {
      issuer: "http://sts.example.test",
      subject: "alice",
      resource: "https://crm.example.test",
      clientId: "billing-agent",
      scopes: ["crm:read"],
      iat: 1_800_000_000,
      ttlSeconds: 300,
      jti: "jti-1",
      approval: {
        id: "apr_x",
        task: "reconcile",
        tools: null,
        resources: null,
        prompts: null,
        call_tool: null,
        call_arguments_digest: null,
      },
      act: undefined,
      rateLimit: undefined,
      jkt: undefined,
    };
    assert.deepEqual(accessTokenClaims(content), {
      iss: "http://sts.example.test",
      sub: "alice",
      aud: "https://crm.example.test",
      client_id: "billing-agent",
      scope: "crm:read",
      iat: 1_800_000_000,
      exp: 1_800_000_300,
      jti: "jti-1",
      approval_id: "apr_x",
      authorization_details: [{ type: "agent_task", approval_id: "apr_x", task: "reconcile" }],
    });
    const full = accessTokenClaims({
      ...content,
      act: { sub: "w" },
      rateLimit: { per_second: 1, burst: 2 },
      jkt: "k",
    });
    assert.deepEqual(
      [full.act, full.rate_limit, full.cnf],
      [{ sub: "w" }, { per_second: 1, burst: 2 }, { jkt: "k" }],
    );
    // A call approval: its agent_task names the tool and carries the digest of the exact arguments.
    const digest = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
    const bound = accessTokenClaims({
      ...content,
      approval: {
        ...content.approval,
        tools: ["send_email"],
        call_tool: "send_email",
        call_arguments_digest: digest,
      },
    });
    assert.deepEqual(bound.authorization_details, [
      {
        type: "agent_task",
        approval_id: "apr_x",
        task: "reconcile",
        tools: ["send_email"],
        call: { tool: "send_email", arguments_digest: digest },
      },
    ]);
  });

  test("what the database function answers maps to the reference's refusals", () => {
    const cases = [
      ["not_found", 400, "invalid_grant", "approval_not_found"],
      ["pending", 400, "authorization_pending", "approval_pending"],
      ["denied", 400, "invalid_grant", "approval_denied"],
      ["revoked", 400, "invalid_grant", "approval_revoked"],
      ["expired", 400, "invalid_grant", "approval_expired"],
      ["used_up", 400, "invalid_grant", "approval_used_up"],
      ["terms_changed", 503, "temporarily_unavailable", "approval_changed"],
    ] as const;
    for (const [outcome, status, error, reason] of cases) {
      const refusal = issueRefusal(outcome);
      assert.deepEqual([refusal.status, refusal.error, refusal.reason], [status, error, reason], outcome);
    }
  });
});
