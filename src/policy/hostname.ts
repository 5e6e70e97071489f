// Hostname normalisation and host-pattern matching (policy.md §10.1, §10.3). Pure.
import { starMatches } from "./glob.ts";

/** Lower-cases a hostname and removes one trailing dot (no IDNA conversion). */
export function normalizeHostname(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

/**
 * A compiled `host` / `wildcard_host` target.
 * - `exact`: equality.
 * - `subdomain` (`*.L.B1…Bn`): ≥ 1 label, then a label matching `first`, then exactly `base`.
 * - `label` (`L.B1…Bn`): exactly one label matching `first`, then `base`.
 * `indexKey` is the longest literal suffix every matching name ends with (used by the rule index).
 */
export type HostPattern =
  | { form: "exact"; name: string; indexKey: string }
  | { form: "subdomain" | "label"; first: string; base: string[]; indexKey: string };

export function compileHostPattern(pattern: string): HostPattern {
  const lower = pattern.toLowerCase();
  if (!lower.includes("*")) return { form: "exact", name: lower, indexKey: lower };
  const subdomain = lower.startsWith("*.");
  const labels = (subdomain ? lower.slice(2) : lower).split(".");
  const first = labels[0];
  const base = labels.slice(1);
  const indexKey = first.includes("*") ? base.join(".") : labels.join(".");
  return { form: subdomain ? "subdomain" : "label", first, base, indexKey };
}

// Real (lower-cased) names: non-empty labels of LDH plus "_", which service names such as _dmarc use.
const HOSTNAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;

// The same with "*": a wildcard pattern treated as a name, for the cross-rule overlap checks only.
const PATTERN_AS_NAME = /^[a-z0-9_*-]+(?:\.[a-z0-9_*-]+)*$/;

/**
 * `hostname` must already be normalised (see `normalizeHostname`). `asPattern` lets `hostname` be
 * a wildcard pattern itself (validation's overlap checks); events never pass it.
 */
export function compiledHostMatches(compiled: HostPattern, hostname: string, asPattern = false): boolean {
  if (compiled.form === "exact") return compiled.name === hostname;
  // A name with an empty label or a character no hostname has (`:`, `@`, `/`, `%`, NUL, …) is
  // malformed: wildcards never vouch for it (`*.x.com` must not match `evil.com:80@a.x.com`).
  if (!(asPattern ? PATTERN_AS_NAME : HOSTNAME).test(hostname)) return false;
  const labels = hostname.split(".");
  const n = compiled.base.length;
  if (compiled.form === "label" ? labels.length !== n + 1 : labels.length < n + 2) return false;
  const offset = labels.length - n;
  for (let i = 0; i < n; i++) {
    if (labels[offset + i] !== compiled.base[i]) return false;
  }
  return starMatches(compiled.first, labels[offset - 1]);
}

const compiledCache = new Map<string, HostPattern>();

/**
 * Whether a `host` / `wildcard_host` rule target matches a hostname, case-insensitively, with one
 * trailing dot of the hostname ignored (§10.3).
 */
export function hostPatternMatches(pattern: string, hostname: string, asPattern = false): boolean {
  let compiled = compiledCache.get(pattern);
  if (!compiled) {
    if (compiledCache.size >= 4096) compiledCache.clear();
    compiled = compileHostPattern(pattern);
    compiledCache.set(pattern, compiled);
  }
  return compiledHostMatches(compiled, normalizeHostname(hostname), asPattern);
}
