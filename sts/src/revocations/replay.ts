import type { ServerResponse } from "node:http";

/** One replay in progress. */
interface Job {
  readonly res: ServerResponse;
  readonly pieces: readonly Buffer[];
  /** Index of the next piece to write. */
  next: number;
  /** Called with how many pieces were written, once the replay ends. */
  readonly done: (written: number) => void;
  /** Waiting for `drain`. */
  parked: boolean;
}

/** Options for {@link ReplayScheduler}. */
export interface ReplaySchedulerOptions {
  /**
   * Most event-loop time spent writing replays at once, in milliseconds. Default 0.5: a token request
   * makes several database round trips, and each of its steps may wait for one slice.
   */
  readonly sliceMs?: number;
  /**
   * Largest share of the event loop's time replays may take (0 to 1): after a slice of `d` ms the loop
   * is left to everything else for `d × (1 − share) / share` ms. Default 0.1: replays are held far below
   * that by the per-address replay budget; the share bounds what many addresses together can take.
   */
  readonly share?: number;
  /** A response with more unsent bytes than this waits for `drain`. Default 256 KiB. */
  readonly highWaterBytes?: number;
}

/**
 * Writes every replay of one instance from a single loop, round-robin, a piece at a time, in slices of
 * at most `sliceMs` separated by pauses that keep replays to `share` of the event loop's time: however
 * many subscribers replay at once (and however often they reconnect to be replayed again), the rest of
 * the instance (the token endpoint) keeps the remaining share, and waits at most about one slice for
 * its turn. Replays queue up instead. A response whose buffer is full waits for `drain` without
 * holding the others back.
 */
export class ReplayScheduler {
  readonly #sliceMs: number;
  readonly #share: number;
  readonly #highWater: number;
  readonly #ready: Job[] = [];
  #scheduled = false;

  constructor(options: ReplaySchedulerOptions = {}) {
    this.#sliceMs = options.sliceMs ?? 0.5;
    this.#share = Math.min(1, Math.max(0.01, options.share ?? 0.1));
    this.#highWater = options.highWaterBytes ?? 256 * 1024;
  }

  /** How many replays are in progress (tests, metrics). */
  get active(): number {
    return this.#ready.length;
  }

  /**
   * Writes `pieces` to `res` in order (shared buffers: nothing is copied in JavaScript).
   * @returns how many pieces were written: all, or fewer when the response closed first.
   */
  replay(res: ServerResponse, pieces: readonly Buffer[]): Promise<number> {
    if (pieces.length === 0) return Promise.resolve(0);
    return new Promise((resolve) => {
      this.#ready.push({ res, pieces, next: 0, done: resolve, parked: false });
      this.#schedule();
    });
  }

  /** Runs the next slice after `pauseMs` (0: at the next turn of the event loop). */
  #schedule(pauseMs = 0): void {
    if (this.#scheduled || this.#ready.length === 0) return;
    this.#scheduled = true;
    const run = (): void => {
      this.#scheduled = false;
      this.#run();
    };
    if (pauseMs <= 0) setImmediate(run);
    else setTimeout(run, pauseMs).unref();
  }

  #run(): void {
    const started = performance.now();
    let index = 0;
    while (this.#ready.length > 0 && performance.now() - started < this.#sliceMs) {
      if (index >= this.#ready.length) index = 0;
      const job = this.#ready[index] as Job;
      const { res } = job;
      if (res.destroyed || res.writableEnded) {
        this.#ready.splice(index, 1);
        job.done(job.next);
        continue;
      }
      if (res.writableLength > this.#highWater) {
        this.#ready.splice(index, 1);
        this.#park(job);
        continue;
      }
      res.write(job.pieces[job.next] as Buffer);
      job.next++;
      if (job.next === job.pieces.length) {
        this.#ready.splice(index, 1);
        job.done(job.next);
      } else {
        index++;
      }
    }
    const spent = performance.now() - started;
    this.#schedule(Math.ceil((spent * (1 - this.#share)) / this.#share));
  }

  #park(job: Job): void {
    job.parked = true;
    const resume = (): void => {
      if (!job.parked) return;
      job.parked = false;
      job.res.off("drain", resume);
      job.res.off("close", resume);
      this.#ready.push(job);
      this.#schedule();
    };
    job.res.on("drain", resume);
    job.res.on("close", resume);
  }
}
