/** Splits a space-separated scope string into distinct scope tokens (RFC 6749 §3.3). */
export function parseScope(scope: string): string[] {
  return [...new Set(scope.split(" ").filter(Boolean))];
}
