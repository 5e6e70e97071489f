// URLs as the connection log writes them (events.md §3 `url`): scheme, authority without
// userinfo, path; every query value replaced by `***`; fragment dropped. Pure: no Deno, no node:.

/** Replaces each query parameter's value with `***` (`a=1&b` → `a=***&b`). */
export function scrubQuery(query: string): string {
  if (query.length === 0) return "";
  return query.split("&").map((part) => {
    const eq = part.indexOf("=");
    return eq < 0 ? part : `${part.slice(0, eq)}=***`;
  }).join("&");
}

/** Drops `user:password@` from an authority. */
export function stripUserinfo(authority: string): string {
  const at = authority.lastIndexOf("@");
  return at < 0 ? authority : authority.slice(at + 1);
}

/**
 * Builds the log URL from the parts the proxy knows: scheme, Host/authority and the request
 * target's path (with query). The path keeps its bytes; only query values are hidden.
 */
export function buildLogUrl(scheme: "http" | "https", authority: string, pathAndQuery: string): string {
  let path = pathAndQuery;
  const hash = path.indexOf("#");
  if (hash >= 0) path = path.slice(0, hash);
  let query = "";
  const question = path.indexOf("?");
  if (question >= 0) {
    query = path.slice(question + 1);
    path = path.slice(0, question);
  }
  if (!path.startsWith("/")) path = "/" + path;
  const host = stripUserinfo(authority).toLowerCase();
  return `${scheme}://${host}${path}${question >= 0 ? "?" + scrubQuery(query) : ""}`;
}

/**
 * Scrubs an absolute URL string (`http://` or `https://`, any case). Returns undefined when it is
 * not one, so callers never log something they could not scrub.
 */
export function scrubAbsoluteUrl(url: string): string | undefined {
  const m = /^(https?):\/\/([^/?#]*)(.*)$/i.exec(url);
  if (!m) return undefined;
  return buildLogUrl(m[1].toLowerCase() as "http" | "https", m[2], m[3]);
}
