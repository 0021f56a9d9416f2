/**
 * Counts forwarded exchanges open at once, per client (`client_id`) and in all. `acquire` returns the
 * release function (idempotent) or the refusal; a client's entry is removed when its count is 0, so
 * the map holds at most `total` entries.
 */
export class ExchangeSlots {
  readonly #open = new Map<string, number>();
  #total = 0;

  constructor(
    readonly maxTotal: number,
    readonly maxPerClient: number,
  ) {}

  /** Takes a slot for `clientId`: its release function, or which cap refused it. */
  acquire(clientId: string): (() => void) | "client_exchange_limit" | "gateway_exchange_limit" {
    const mine = this.#open.get(clientId) ?? 0;
    if (mine >= this.maxPerClient) return "client_exchange_limit";
    if (this.#total >= this.maxTotal) return "gateway_exchange_limit";
    this.#open.set(clientId, mine + 1);
    this.#total++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#total--;
      const left = (this.#open.get(clientId) ?? 1) - 1;
      if (left <= 0) this.#open.delete(clientId);
      else this.#open.set(clientId, left);
    };
  }
}
