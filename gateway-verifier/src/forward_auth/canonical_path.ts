/** Longest original URI accepted, in characters (nginx's default large header buffer is 8 KiB). */
export const MAX_URI_CHARS = 8192;

/**
 * The path a proxy routes on, from the raw path the client sent (without the query): percent-decoded
 * once, repeated slashes merged and `.`/`..` segments resolved, as nginx (`merge_slashes on`) and Caddy
 * do before matching locations. Route scopes are matched on this form so that `/public/../contacts`
 * or `/%63ontacts` cannot reach `/contacts` under another route's scopes.
 *
 * Returns undefined (refuse) for a path that is not origin-form (`/…`), has a malformed escape, decodes
 * to a control character, or climbs above the root.
 */
export function canonicalPath(rawPath: string): string | undefined {
  if (!rawPath.startsWith("/") || rawPath.length > MAX_URI_CHARS) return undefined;
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    return undefined;
  }
  for (let i = 0; i < decoded.length; i++) {
    const code = decoded.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return undefined;
  }
  const segments: string[] = [];
  const parts = decoded.split("/").slice(1);
  for (const [index, part] of parts.entries()) {
    const last = index === parts.length - 1;
    if (part === "" && !last) continue;
    if (part === ".") {
      if (last) segments.push("");
      continue;
    }
    if (part === "..") {
      if (segments.length === 0) return undefined;
      segments.pop();
      if (last) segments.push("");
      continue;
    }
    segments.push(part);
  }
  return `/${segments.join("/")}`;
}
