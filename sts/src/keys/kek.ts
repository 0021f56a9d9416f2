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
 * What to do instead of keeping the key-encryption key in the data directory: the warning logged when
 * a deployment outside dev mode does so (`file` is the key's path).
 */
export function dataDirKekAdvice(file: string): string {
  return (
    "the key-encryption key is stored next to the data it protects, so a copy of the data directory " +
    "opens the signing keys: set COUNTERSIGN_KEK (32 bytes, base64url) from a secret store instead. " +
    `To keep the existing signing keys, put the content of ${file} in COUNTERSIGN_KEK and delete the file; ` +
    "for a new deployment, generate one with " +
    `node -e "console.log(require('node:crypto').randomBytes(32).toString('base64url'))"`
  );
}

/**
 * Resolves the key-encryption key: from `COUNTERSIGN_KEK` (base64url) when given; otherwise (meant for
 * development) from `<dataDir>/kek`, generated on first use with owner-only permissions, and
 * `onDataDirKey` is told (so the caller can warn outside dev mode). Creation is exclusive, so two
 * instances starting together end up with the same key.
 */
export function resolveKeyEncryptionKey(options: {
  kek: string | undefined;
  dataDir: string;
  /** Called when the key comes from the data directory: its path, and whether it was generated now. */
  onDataDirKey?: (key: { file: string; generated: boolean }) => void;
}): KeyEncryptionKey {
  if (options.kek) return createKeyEncryptionKey(Buffer.from(options.kek, "base64url"));
  const file = path.join(options.dataDir, "kek");
  let generated = false;
  const encoded = readOrCreatePrivateFile(file, () => {
    generated = true;
    return `${randomBytes(32).toString("base64url")}\n`;
  }).trim();
  if (!/^[A-Za-z0-9_-]{43}$/.test(encoded)) throw new Error(`${file} does not hold a 32-byte base64url key`);
  options.onDataDirKey?.({ file, generated });
  return createKeyEncryptionKey(Buffer.from(encoded, "base64url"));
}
