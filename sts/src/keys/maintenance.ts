import type { Kysely } from "kysely";
import type { Config } from "../config/load.js";
import type { Database } from "../db/schema.js";
import type { Logger } from "../ops/logger.js";
import type { KeyEncryptionKey } from "./kek.js";
import type { KeyRing } from "./key_ring.js";
import { type RotationResult, retirePreviousKeys, rotateSigningKeys } from "./rotation.js";

/** Seconds of clock skew allowed on top of the longest token lifetime before a previous key retires. */
const RETIREMENT_MARGIN_SECONDS = 60;

/** The background key job: scheduled rotation, retirement of old keys, and picking up others' rotations. */
export interface KeyMaintenance {
  rotateNow(): Promise<RotationResult | undefined>;
  stop(): void;
}

/**
 * Every `keys.refresh_interval_seconds`: rotate when `keys.rotation_interval_seconds` is set and the
 * current key is older than that (once across instances), retire previous keys whose tokens have all
 * expired, and reload the key ring (so a rotation made elsewhere is picked up). Errors are logged and
 * retried on the next tick; the keys in memory keep working meanwhile.
 */
export function startKeyMaintenance(options: {
  db: Kysely<Database>;
  kek: KeyEncryptionKey;
  keyRing: KeyRing;
  config: Config;
  logger: Logger;
}): KeyMaintenance {
  const { db, kek, keyRing, config, logger } = options;
  const alg = config.tokens.signing_alg;
  const retireAfterSeconds = config.tokens.max_ttl_seconds + RETIREMENT_MARGIN_SECONDS;
  let busy = false;

  async function tick(): Promise<void> {
    const interval = config.keys.rotation_interval_seconds;
    if (interval !== undefined) {
      const rotated = await rotateSigningKeys(db, kek, alg, {
        retireAfterSeconds,
        onlyIfOlderThanSeconds: interval,
      });
      if (rotated)
        logger.info({ current: rotated.current, next: rotated.next }, "signing keys rotated on schedule");
    }
    const retired = await retirePreviousKeys(db, alg, retireAfterSeconds);
    if (retired.length > 0) logger.info({ retired }, "previous signing keys retired");
    await keyRing.refresh();
  }

  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    tick()
      .catch((error: unknown) =>
        logger.warn({ err: { message: (error as Error).message } }, "key maintenance failed"),
      )
      .finally(() => {
        busy = false;
      });
  }, config.keys.refresh_interval_seconds * 1000);
  timer.unref();

  return {
    async rotateNow() {
      const result = await rotateSigningKeys(db, kek, alg, { retireAfterSeconds });
      await keyRing.refresh();
      return result;
    },
    stop() {
      clearInterval(timer);
    },
  };
}
