import { REFUSAL_WINDOW_SECONDS } from "../../sts/src/audit/refusals.js";

/**
 * Most audit rows `seconds` of refusals of one key may take: one per refusal-counting window they touch
 * (a slow machine spreads a loop of refusals over more windows than a fast one).
 */
export function windowsTouched(seconds: number): number {
  return Math.ceil(seconds / REFUSAL_WINDOW_SECONDS) + 1;
}
