/**
 * The load side of the revocation-stream benchmark, run as its own process by `bench/revocations/index.ts`
 * (so parsing streams never shares the measuring process's event loop):
 *
 *   tsx bench/revocations/streams.ts <sts url> <streams> <Last-Event-ID> <events per replay> <per address>
 *
 * Opens `<streams>` resuming streams, at most `<per address>` from each local address (127.0.0.2,
 * 127.0.0.3, … : every 127/8 address is local on Linux), each sending `Last-Event-ID`. A stream that has
 * received its replay (`<events per replay>` events) is closed and opened again at once, so replays
 * never stop (as fast as the STS lets them). A refused stream (any status but 200) is retried after its
 * `Retry-After`, else after 100 ms. Prints `ready` once every
 * stream has been answered 200 once, or after `BENCH_READY_SECONDS` (default 30) whichever comes
 * first; prints one JSON line of counts every 500 ms and on SIGTERM (`answered`: streams answered 200
 * at least once), then exits.
 */
import http from "node:http";

const [url, streamsText, lastEventId, perReplayText, perAddressText] = process.argv.slice(2);
if (!url || !streamsText || !lastEventId || !perReplayText || !perAddressText) {
  throw new Error("usage: streams.ts <sts url> <streams> <Last-Event-ID> <events per replay> <per address>");
}
const streams = Number(streamsText);
const perReplay = Number(perReplayText);
const perAddress = Number(perAddressText);

const READY_SECONDS = Number(process.env.BENCH_READY_SECONDS ?? 30);
const counts = { replays: 0, events: 0, refused: {} as Record<string, number>, errors: 0, answered: 0 };
const answered = new Set<number>();
let stopping = false;
let readySent = false;
const agent = new http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
const EVENT_END = Buffer.from("\n\n");
const DATA = Buffer.from("data: ");

/** Counts `data: ` lines that start a chunk or follow a newline; a split marker is carried over. */
function countEvents(buffer: Buffer): number {
  let n = 0;
  let at = buffer.indexOf(DATA);
  while (at >= 0) {
    if (at === 0 || buffer[at - 1] === 0x0a) n++;
    at = buffer.indexOf(DATA, at + DATA.length);
  }
  return n;
}

function open(index: number): void {
  if (stopping) return;
  const localAddress = `127.0.0.${2 + Math.floor(index / perAddress)}`;
  let received = 0;
  let carry: Buffer = Buffer.alloc(0);
  const request = http.get(
    `${url}/revocations/stream`,
    { agent, localAddress, headers: { accept: "text/event-stream", "last-event-id": lastEventId } },
    (response) => {
      if (response.statusCode !== 200) {
        const key = String(response.statusCode);
        counts.refused[key] = (counts.refused[key] ?? 0) + 1;
        // As a gateway would: after Retry-After when given, else 100 ms.
        const retryAfter = Number(response.headers["retry-after"]);
        const wait = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 100;
        response.resume();
        response.on("end", () => setTimeout(() => open(index), wait));
        return;
      }
      answered.add(index);
      counts.answered = answered.size;
      if (!readySent && answered.size === streams) {
        readySent = true;
        process.stdout.write("ready\n");
      }
      response.on("data", (chunk: Buffer) => {
        const text = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
        const cut = text.lastIndexOf(EVENT_END);
        if (cut < 0) {
          carry = text;
          return;
        }
        received += countEvents(text.subarray(0, cut + EVENT_END.length));
        carry = Buffer.from(text.subarray(cut + EVENT_END.length));
        if (received >= perReplay) {
          counts.replays++;
          counts.events += received;
          request.destroy();
          setImmediate(() => open(index));
        }
      });
      response.on("error", () => {});
    },
  );
  request.on("error", () => {
    if (stopping) return;
    counts.errors++;
    setTimeout(() => open(index), 100);
  });
}

for (let i = 0; i < streams; i++) open(i);
// An STS that cannot answer every stream in time is measured anyway (the counts say how many were).
setTimeout(() => {
  if (!readySent) {
    readySent = true;
    process.stdout.write("ready\n");
  }
}, READY_SECONDS * 1000).unref();
// The counts so far, every 500 ms: the benchmark reads them even if this process gets little CPU.
setInterval(() => process.stdout.write(`${JSON.stringify(counts)}\n`), 500).unref();

process.on("SIGTERM", () => {
  stopping = true;
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  process.exit(0);
});
