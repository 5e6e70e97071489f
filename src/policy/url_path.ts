// URL path patterns (policy.md §10.4). Pure. No percent-decoding: `/a%20b` never equals `/a b`.
import { starMatches } from "./glob.ts";

export type PathPattern = {
  readonly pattern: string;
  /** Segments after trailing-slash removal and without a final `*` segment. */
  readonly segments: readonly string[];
  readonly trailingWildcard: boolean;
};

function withoutTrailingSlash(path: string): string {
  return path !== "/" && path.endsWith("/") ? path.slice(0, -1) : path;
}

export function compilePathPattern(pattern: string): PathPattern {
  const segments = withoutTrailingSlash(pattern).split("/");
  const trailingWildcard = segments.length > 1 && segments[segments.length - 1] === "*";
  if (trailingWildcard) segments.pop();
  return { pattern, segments, trailingWildcard };
}

/** The raw path of a request target: query and fragment removed; empty ⇒ `/`. */
export function requestPathOf(rawPath: string): string {
  let end = rawPath.length;
  const query = rawPath.indexOf("?");
  if (query >= 0) end = query;
  const fragment = rawPath.indexOf("#");
  if (fragment >= 0 && fragment < end) end = fragment;
  const path = rawPath.slice(0, end);
  return path === "" ? "/" : path;
}

// Separators some servers split on besides "/": "\" (WHATWG URL parsing, IIS) and the encoded
// "/" and "\" (servers that decode before resolving).
const LENIENT_SEPARATOR = /\/|\\|%2f|%5c/i;

/**
 * A `.` or `..` segment, also written with `%2e` in any case: servers would resolve it elsewhere.
 * Stricter than §10.4 on purpose (it only denies more): segments are also split at `\`, `%2f`
 * and `%5c`, and a `;parameter` is ignored (`..;` is `..` to Tomcat and others).
 */
export function hasDotSegment(path: string): boolean {
  for (const segment of path.split(LENIENT_SEPARATOR)) {
    const semicolon = segment.indexOf(";");
    const name = semicolon < 0 ? segment : segment.slice(0, semicolon);
    if (name.length === 0 || name.length > 6) continue;
    const decoded = name.replace(/%2e/gi, ".");
    if (decoded === "." || decoded === "..") return true;
  }
  return false;
}

/** `path` is the raw request path (query/fragment may still be attached; they are ignored). */
export function pathMatches(compiled: PathPattern, rawPath: string): boolean {
  const path = requestPathOf(rawPath);
  if (hasDotSegment(path)) return false;
  const actual = withoutTrailingSlash(path).split("/");
  const expected = compiled.segments;
  if (compiled.trailingWildcard ? actual.length < expected.length : actual.length !== expected.length) {
    return false;
  }
  for (let i = 0; i < expected.length; i++) {
    const want = expected[i];
    if (want === "*") continue;
    if (want.includes("*") ? !starMatches(want, actual[i]) : want !== actual[i]) return false;
  }
  return true;
}

/** One-shot form of `compilePathPattern` + `pathMatches`. */
export function urlPathMatches(pattern: string, rawPath: string): boolean {
  return pathMatches(compilePathPattern(pattern), rawPath);
}
