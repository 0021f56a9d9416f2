import { isIPv4, isIPv6 } from "node:net";

/** How far `X-Forwarded-For` is trusted: not at all, or this many proxies in front of the STS. */
export type TrustProxy = boolean | number;

/**
 * The client address a request counts against (per-address stream slots).
 *
 * Without `trustProxy` it is the connection's peer, whatever the request's headers say. With it, it is
 * the entry of `X-Forwarded-For` that the trusted proxies appended: the last one for `true` (one proxy),
 * the `n`-th from the right for `n` proxies. Entries to its left were written by the client and are
 * never used. When that entry is missing or is not an IP address, the peer (the proxy) is used, so a
 * malformed header shares the proxy's slots instead of getting fresh ones.
 *
 * An IPv4-mapped IPv6 address counts as its IPv4 address; an IPv6 address counts as its /64 (one host
 * commonly holds a whole /64, so per-address slots would otherwise not bound it).
 */
export function clientAddress(
  peer: string | undefined,
  forwardedFor: string | string[] | undefined,
  trustProxy: TrustProxy,
): string {
  const fallback = addressKey(peer ?? "") ?? "unknown";
  const hops = trustProxy === true ? 1 : trustProxy === false ? 0 : trustProxy;
  if (hops < 1 || forwardedFor === undefined) return fallback;
  const entries = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor).split(",");
  const entry = entries[entries.length - hops];
  if (entry === undefined) return fallback;
  return addressKey(entry.trim()) ?? fallback;
}

/** The key an address counts under (see {@link clientAddress}); undefined when it is not an IP address. */
export function addressKey(value: string): string | undefined {
  let address = value;
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) address = bracketed[1] as string;
  const withPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(address);
  if (withPort) address = withPort[1] as string;
  address = address.replace(/%[^%]*$/, "");
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped && isIPv4(mapped[1] as string)) return mapped[1];
  if (isIPv4(address)) return address;
  if (isIPv6(address)) return `${ipv6Groups(address).slice(0, 4).join(":")}::/64`;
  return undefined;
}

/** The eight groups of a valid IPv6 address, lower-case hex without leading zeros. */
function ipv6Groups(address: string): string[] {
  let text = address.toLowerCase();
  const v4 = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const zeros = Array.from({ length: 8 - headGroups.length - tailGroups.length }, () => "0");
  return [...headGroups, ...(tail === undefined ? [] : zeros), ...tailGroups].map((group) =>
    Number.parseInt(group, 16).toString(16),
  );
}
