import assert from "node:assert/strict";

/**
 * Signs with `sign(attempt)` (each attempt must sign something different: RS256 is deterministic)
 * until a signature starts with a zero octet, about 1 in 256 for RSA, and returns that token and the
 * same token with that octet left out: the same number, which OpenSSL verifies for RSA-PSS, in
 * another spelling (RFC 8017 §8.1.2 step 1 refuses it: a signature is exactly the modulus's length).
 * Fails the test after 5,000 attempts (a chance of about 3 in a billion).
 */
export async function leadingZeroSignature(
  sign: (attempt: number) => Promise<string>,
): Promise<{ signed: string; stripped: string }> {
  for (let attempt = 0; attempt < 5_000; attempt++) {
    const signed = await sign(attempt);
    const dot = signed.lastIndexOf(".");
    const signature = Buffer.from(signed.slice(dot + 1), "base64url");
    if (signature[0] === 0) {
      return { signed, stripped: `${signed.slice(0, dot)}.${signature.subarray(1).toString("base64url")}` };
    }
  }
  assert.fail("no signature with a leading zero octet in 5,000");
}
