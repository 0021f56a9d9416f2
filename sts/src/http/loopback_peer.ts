import { BlockList, isIP } from "node:net";

/** 127.0.0.0/8 and ::1; IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) match the IPv4 rule. */
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/**
 * True when `address` (a socket's `remoteAddress` or a bound address) is on this machine's loopback
 * interface: in 127.0.0.0/8, or `::1` (also as an IPv4-mapped IPv6 address). Anything else, including
 * an absent address (a destroyed socket) or a name, is not. Callers pass the socket's own address,
 * never a header such as `X-Forwarded-For`, which any caller can write.
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  return LOOPBACK.check(address, family === 4 ? "ipv4" : "ipv6");
}
