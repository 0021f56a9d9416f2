/**
 * The `NOTIFY` channel that tells every STS instance (and through the feed, every gateway) of a
 * revocation or an expiry written to the feed.
 */
export const REVOCATIONS_CHANNEL = "countersign_revocations";
