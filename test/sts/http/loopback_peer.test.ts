import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isLoopbackAddress } from "../../../sts/src/http/loopback_peer.js";
import { devModeBindWarning } from "../../../sts/src/server.js";

describe("loopback peers", () => {
  test("127.0.0.0/8 and ::1 (also IPv4-mapped) are loopback; nothing else is", () => {
    const loopback = ["127.0.0.1", "127.255.255.254", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"];
    const other = [
      "192.0.2.2",
      "10.0.0.1",
      "128.0.0.1",
      "0.0.0.0",
      "::",
      "::ffff:192.0.2.2",
      "fd00::2",
      "localhost",
      "",
      undefined,
    ];
    assert.deepEqual(
      loopback.map((address) => isLoopbackAddress(address)),
      loopback.map(() => true),
    );
    assert.deepEqual(
      other.map((address) => [address, isLoopbackAddress(address)]),
      other.map((address) => [address, false]),
    );
  });

  test("dev mode bound outside loopback gets a start-up warning; loopback or no dev mode gets none", () => {
    assert.equal(
      devModeBindWarning(true, "0.0.0.0"),
      "dev_mode is on and the STS listens on 0.0.0.0, not on loopback: development mode trusts its development issuer and must not face a network; set HOST=127.0.0.1, or dev_mode: false in a config file",
    );
    assert.match(
      devModeBindWarning(true, "::") ?? "",
      /^dev_mode is on and the STS listens on ::, not on loopback/,
    );
    assert.equal(devModeBindWarning(true, "127.0.0.1"), undefined);
    assert.equal(devModeBindWarning(true, "::1"), undefined);
    assert.equal(devModeBindWarning(false, "0.0.0.0"), undefined);
  });
});
