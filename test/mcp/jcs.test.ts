import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { argumentsDigest, canonicalJson, numbersAreCanonical } from "../../gateway-verifier/src/mcp/jcs.js";

/** A double from its IEEE 754 bits, as RFC 8785 Appendix B lists them. */
function fromHex(hex: string): number {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(`0x${hex}`));
  return view.getFloat64(0);
}

describe("RFC 8785 JSON canonicalization (gateway-verifier/src/mcp/jcs.ts)", () => {
  test("RFC 8785 §3.2.2 example: whitespace, numbers, string escapes and literals", () => {
    const input = JSON.parse(
      '{\n  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n' +
        '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n' +
        '  "literals": [null, true, false]\n}',
    );
    assert.equal(
      canonicalJson(input),
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' +
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  test("RFC 8785 §3.2.3 example: members sorted by UTF-16 code units", () => {
    const input = JSON.parse(
      '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh",' +
        '"1":"One","\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control",' +
        '"\\u00f6":"Latin Small Letter O With Diaeresis"}',
    );
    assert.equal(
      canonicalJson(input),
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","ö":"Latin Small Letter O With Diaeresis",' +
        '"€":"Euro Sign","😀":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
  });

  test("RFC 8785 Appendix B number serialisation vectors", () => {
    const vectors: [string, string][] = [
      ["0000000000000000", "0"],
      ["8000000000000000", "0"],
      ["0000000000000001", "5e-324"],
      ["8000000000000001", "-5e-324"],
      ["7fefffffffffffff", "1.7976931348623157e+308"],
      ["ffefffffffffffff", "-1.7976931348623157e+308"],
      ["4340000000000000", "9007199254740992"],
      ["c340000000000000", "-9007199254740992"],
      ["4430000000000000", "295147905179352830000"],
      ["44b52d02c7e14af5", "9.999999999999997e+22"],
      ["44b52d02c7e14af6", "1e+23"],
      ["44b52d02c7e14af7", "1.0000000000000001e+23"],
      ["444b1ae4d6e2ef4e", "999999999999999700000"],
      ["444b1ae4d6e2ef4f", "999999999999999900000"],
      ["444b1ae4d6e2ef50", "1e+21"],
      ["3eb0c6f7a0b5ed8c", "9.999999999999997e-7"],
      ["3eb0c6f7a0b5ed8d", "0.000001"],
      ["41b3de4355555553", "333333333.3333332"],
      ["41b3de4355555554", "333333333.33333325"],
      ["41b3de4355555555", "333333333.3333333"],
      ["41b3de4355555556", "333333333.3333334"],
      ["41b3de4355555557", "333333333.33333343"],
      ["becbf647612f3696", "-0.0000033333333333333333"],
      ["43143ff3c1cb0959", "1424953923781206.2"],
    ];
    for (const [hex, expected] of vectors) assert.equal(canonicalJson(fromHex(hex)), expected, hex);
    // NaN and Infinity are not JSON numbers (Appendix B: "error").
    for (const hex of ["7fffffffffffffff", "7ff0000000000000"]) {
      assert.throws(() => canonicalJson(fromHex(hex)), /JCS: numbers must be finite/);
    }
  });

  test("nested arrays and objects keep array order and sort every object", () => {
    assert.equal(canonicalJson({ b: [3, { z: 1, a: [] }], a: {} }), '{"a":{},"b":[3,{"a":[],"z":1}]}');
    // A member named __proto__ (JSON.parse makes it an own property) is data like any other.
    assert.equal(canonicalJson(JSON.parse('{"b":2,"__proto__":{"a":1}}')), '{"__proto__":{"a":1},"b":2}');
  });

  test("refuses what is not I-JSON: lone surrogates (in values and names), non-JSON values, too deep", () => {
    assert.throws(() => canonicalJson({ a: "\ud800" }), /lone surrogate/);
    assert.throws(() => canonicalJson({ "\udc00": 1 }), /lone surrogate/);
    assert.throws(() => canonicalJson({ a: undefined }), /undefined is not a JSON value/);
    assert.throws(() => canonicalJson(10n), /bigint is not a JSON value/);
    assert.throws(() => canonicalJson(new Date(0)), /only plain objects/);
    const deep = JSON.parse(`${"[".repeat(5)}${"]".repeat(5)}`);
    assert.equal(canonicalJson(deep, 5), "[[[[[]]]]]");
    assert.throws(() => canonicalJson(deep, 4), /nested deeper than 4/);
  });

  test("argumentsDigest is base64url(SHA-256(canonical UTF-8)); absent arguments digest as {}", () => {
    const args = { to: "bob@example.test", amount: 10.5, note: "€" };
    const expected = createHash("sha256")
      .update('{"amount":10.5,"note":"€","to":"bob@example.test"}', "utf8")
      .digest("base64url");
    assert.equal(argumentsDigest(args), expected);
    assert.equal(argumentsDigest({ note: "€", amount: 10.5, to: "bob@example.test" }), expected);
    assert.match(expected, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(argumentsDigest(undefined), argumentsDigest({}));
    assert.notEqual(argumentsDigest({ amount: 10.50001 }), argumentsDigest({ amount: 10.5 }));
  });

  test("numbersAreCanonical accepts only number literals JCS would write, and ignores strings", () => {
    for (const text of ['{"a":1,"b":-2.5,"c":1e+21,"d":5e-324,"e":0}', '["1.0","-0","1E5"]', "[]"]) {
      assert.equal(numbersAreCanonical(text), true, text);
    }
    for (const text of [
      '{"a":1.0}',
      '{"a":-0}',
      '{"a":1E+21}',
      '{"a":1e21}',
      '{"a":100e0}',
      '{"a":10000000000000001}',
      '{"s":"x\\"","a":[2.50]}',
    ]) {
      assert.equal(numbersAreCanonical(text), false, text);
    }
  });
});
