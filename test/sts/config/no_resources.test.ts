import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { NO_RESOURCES } from "../../../sts/src/app.js";
import {
  baseConfig,
  basicAuth,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../../helpers/app.js";

/** The `config.no_resources` log lines of `sts`. */
function noResourceLines(sts: TestApp): Array<Record<string, unknown>> {
  return sts.logs.lines
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.event === "config.no_resources");
}

describe('a config without resources (a careless operator\'s `{"dev_mode": true}`)', () => {
  test("starts with one warning naming the reason code and the config; approvals are refused", async () => {
    const sts = await startTestApp({ engine: "pglite", config: { ...baseConfig(), resources: [] } });
    try {
      const grant = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(grant.status, 200, JSON.stringify(grant.body));
      const asked = await fetch(`${sts.url}/approvals`, {
        method: "POST",
        headers: { authorization: `Bearer ${grant.body.access_token}`, "content-type": "application/json" },
        body: JSON.stringify({ resource: "https://crm.example.test", scope: "crm:read", task: "export" }),
      });
      assert.equal(asked.status, 400);
      assert.deepEqual(await asked.json(), {
        error: "invalid_target",
        error_description: "resource: is not a configured resource",
      });
      const lines = noResourceLines(sts);
      assert.equal(lines.length, 1, sts.logs.text);
      const [line] = lines;
      assert.equal(line?.level, 40);
      assert.equal(line?.reason, "no_resources");
      assert.equal(line?.config, "development default");
      assert.equal(line?.msg, NO_RESOURCES);
      assert.match(NO_RESOURCES, /^the config lists no resources: /);
    } finally {
      await sts.stop();
    }
  });

  test("a config with resources starts without that warning", async () => {
    const sts = await startTestApp({ engine: "pglite", config: baseConfig() });
    try {
      assert.deepEqual(noResourceLines(sts), []);
    } finally {
      await sts.stop();
    }
  });
});
