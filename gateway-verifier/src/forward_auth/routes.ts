/** One per-route rule: requests whose method and canonical path match need `scopes`. */
export interface ForwardAuthRoute {
  /** HTTP method, compared case-insensitively; absent or `"*"` matches every method. */
  method?: string;
  /** Path prefix, matched on whole segments: `/contacts` matches `/contacts` and `/contacts/1`, not `/contactsX`. */
  pathPrefix: string;
  /** Scopes a matching request needs (in addition to the service-wide required scopes). */
  scopes: readonly string[];
}

/** Most routes accepted in one configuration. */
export const MAX_ROUTES = 1000;

function matches(prefix: string, path: string): boolean {
  if (prefix === "/" || path === prefix) return true;
  const base = prefix.endsWith("/") ? prefix : `${prefix}/`;
  return path.startsWith(base);
}

/**
 * The scopes a request needs: `required` plus those of the most specific matching route (longest
 * `pathPrefix`; at equal length a route naming the method wins over a `*` route). A request no route
 * matches needs `required` only — add a `{"path_prefix": "/", …}` route to require scopes everywhere.
 */
export function compileRoutes(
  required: readonly string[],
  routes: readonly ForwardAuthRoute[],
): (method: string, canonicalPath: string) => readonly string[] {
  const ordered = routes
    .map((route) => ({
      method: route.method === undefined || route.method === "*" ? undefined : route.method.toUpperCase(),
      prefix: route.pathPrefix,
      scopes: route.scopes,
    }))
    .sort(
      (a, b) =>
        b.prefix.length - a.prefix.length || Number(a.method === undefined) - Number(b.method === undefined),
    );
  return (method, path) => {
    const upper = method.toUpperCase();
    const route = ordered.find(
      (candidate) =>
        (candidate.method === undefined || candidate.method === upper) && matches(candidate.prefix, path),
    );
    return route === undefined ? required : [...new Set([...required, ...route.scopes])];
  };
}
