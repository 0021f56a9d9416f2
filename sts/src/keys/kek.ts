import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import path from "node:path";
import { readOrCreatePrivateFile } from "../ops/files.js";

/** A 256-bit key-encryption key that seals signing keys at rest with AES-256-GCM. */
export interface KeyEncryptionKey {
  /** Encrypts `plaintext`, binding it to `context` (authenticated, not secret). */
  seal(plaintext: string, context: string): string;
  /** Decrypts what {@link seal} produced for the same `context`; throws on any tampering. */
  open(sealed: string, context: string): string;
  /** Derives an independent 32-byte key for another purpose (HKDF-SHA-256 with `info`). */
  derive(info: string): Buffer;
}

const VERSION = "v1";

/** Wraps 32 raw bytes as a {@link KeyEncryptionKey}. */
export function createKeyEncryptionKey(raw: Buffer): KeyEncryptionKey {
  if (raw.length !== 32) throw new Error("the key-encryption key must be 32 bytes");
  const key = Buffer.from(raw);
  return {
    seal(plaintext, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", key, iv);
      cipher.setAAD(Buffer.from(context));
      const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return [
        VERSION,
        iv.toString("base64url"),
        body.toString("base64url"),
        cipher.getAuthTag().toString("base64url"),
      ].join(".");
    },
    derive(info) {
      return Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), info, 32));
    },
    open(sealed, context) {
      const [version, iv, body, tag] = sealed.split(".");
      if (version !== VERSION || !iv || !body || !tag) throw new Error("unrecognised sealed key format");
      const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64url"));
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([decipher.update(Buffer.from(body, "base64url")), decipher.final()]).toString(
        "utf8",
      );
    },
  };
}

/**
 * Resolves the key-encryption key: from `COUNTERSIGN_KEK` (base64url) when given; otherwise (development
 * only) from `<dataDir>/kek`, generated on first use with owner-only permissions. Creation is exclusive,
 * so two instances starting together end up with the same key.
 */
export function resolveKeyEncryptionKey(options: {
  kek: string | undefined;
  dataDir: string;
}): KeyEncryptionKey {
  if (options.kek) return createKeyEncryptionKey(Buffer.from(options.kek, "base64url"));
  const file = path.join(options.dataDir, "kek");
  const encoded = readOrCreatePrivateFile(file, () => `${randomBytes(32).toString("base64url")}\n`).trim();
  if (!/^[A-Za-z0-9_-]{43}$/.test(encoded)) throw new Error(`${file} does not hold a 32-byte base64url key`);
  return createKeyEncryptionKey(Buffer.from(encoded, "base64url"));
}
