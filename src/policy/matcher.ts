// Rule compilation, indexing and matching (policy.md §10.2, §10.6). Pure.
//
// Rules are compiled and indexed once per rules array (WeakMap on its identity): hostname-bearing rules
// by their exact name or the literal suffix of their wildcard, ip rules by address, cidr rules by
// network per prefix length. A lookup gathers the few candidate indexes, sorts them, and the first
// one that fully matches is the answer, which keeps "first match in rule order" semantics.
import type { ConnectionEvent, Rule, RuleMatch } from "./types.ts";
import { compiledHostMatches, compileHostPattern, type HostPattern, normalizeHostname } from "./hostname.ts";
import { eventIpv4, parseCidr, parseIpv4 } from "./ipv4.ts";
import { compilePathPattern, pathMatches, type PathPattern, requestPathOf } from "./url_path.ts";
import { type AttributePredicate, compileAttributes } from "./attributes.ts";

/** A rule prepared for matching. Malformed targets compile to `broken` rules that never match. */
export type CompiledRule = {
  readonly index: number;
  readonly rule: Rule;
  readonly broken: boolean;
  readonly protocol: "tcp" | "udp";
  readonly ports: ReadonlySet<number> | "*";
  readonly attributes: AttributePredicate;
  /** host / wildcard_host / dns_* target, or the host of a url rule / url_base of a path rule. */
  readonly host?: HostPattern;
  /** url/path rules whose host is an IPv4 literal: it must equal the URL host (and, corroborated, dst_ip). */
  readonly hostIpv4?: number;
  readonly hostText?: string;
  /** ip rules: the address; cidr rules: network and mask. */
  readonly network?: number;
  readonly mask?: number;
  readonly prefixLength?: number;
  readonly scheme?: string;
  readonly path?: PathPattern;
  readonly methods?: ReadonlySet<string> | "*";
};

/** An event prepared once per decision: normalised hostname, parsed dst_ip and URL. */
export type PreparedEvent = {
  readonly event: ConnectionEvent;
  readonly protocol: "tcp" | "udp" | undefined;
  readonly dstPort: number;
  readonly dstIpv4: number | undefined;
  /** Normalised event hostname (`host`, else `name`, else the URL host); undefined if none. */
  readonly hostname: string | undefined;
  readonly url: ParsedUrl | undefined;
  readonly method: string;
};

export type ParsedUrl = { scheme: string; host: string; path: string };

/** Splits `scheme://[userinfo@]host[:port]/path?query#fragment` without normalising the path. */
export function parseEventUrl(url: string): ParsedUrl | undefined {
  const schemeEnd = url.indexOf("://");
  if (schemeEnd <= 0 || !/^[A-Za-z][A-Za-z0-9+.-]*$/.test(url.slice(0, schemeEnd))) return undefined;
  const scheme = url.slice(0, schemeEnd).toLowerCase();
  const rest = url.slice(schemeEnd + 3);
  let authorityEnd = rest.length;
  // "\" ends the authority too, as WHATWG URL parsing has it for http(s): `https://a.com\@b.com/`
  // is a request to a.com, never to b.com.
  for (const separator of ["/", "?", "#", "\\"]) {
    const at = rest.indexOf(separator);
    if (at >= 0 && at < authorityEnd) authorityEnd = at;
  }
  let authority = rest.slice(0, authorityEnd);
  const userinfoEnd = authority.lastIndexOf("@");
  if (userinfoEnd >= 0) authority = authority.slice(userinfoEnd + 1);
  let host: string;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) return undefined;
    host = authority.slice(0, close + 1);
  } else {
    const colon = authority.indexOf(":");
    host = colon >= 0 ? authority.slice(0, colon) : authority;
  }
  host = normalizeHostname(host);
  if (host === "") return undefined;
  let path = rest.slice(authorityEnd);
  if (!path.startsWith("/")) path = "/" + path; // `?q` or `#f` directly after the authority
  return { scheme, host, path };
}

/** Removes a `:port` suffix from a Host header value and normalises it; "" ⇒ undefined. */
export function normalizeEventHost(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  let name = host;
  const portAt = name.lastIndexOf(":");
  if (
    portAt > 0 && !name.startsWith("[") && /^[0-9]*$/.test(name.slice(portAt + 1)) &&
    name.indexOf(":") === portAt
  ) {
    name = name.slice(0, portAt);
  }
  name = normalizeHostname(name);
  return name === "" ? undefined : name;
}

const TCP_EVENTS = new Set(["http", "https", "tcp"]);
const UDP_EVENTS = new Set(["udp", "dns"]);

export function prepareEvent(event: ConnectionEvent): PreparedEvent {
  const url = typeof event.url === "string" ? parseEventUrl(event.url) : undefined;
  const name = typeof event.name === "string" && event.name !== ""
    ? normalizeHostname(event.name)
    : undefined;
  const hostname = normalizeEventHost(typeof event.host === "string" ? event.host : undefined) ?? name ??
    url?.host;
  return {
    event,
    protocol: TCP_EVENTS.has(event.type) ? "tcp" : UDP_EVENTS.has(event.type) ? "udp" : undefined,
    dstPort: event.dst_port,
    dstIpv4: typeof event.dst_ip === "string" ? eventIpv4(event.dst_ip) : undefined,
    hostname,
    url,
    method: typeof event.method === "string" ? event.method.toUpperCase() : "GET",
  };
}

/** Returns a copy of a prepared event with a different hostname and/or without its URL. */
export function withHostname(
  prepared: PreparedEvent,
  hostname: string | undefined,
  keepUrl = false,
): PreparedEvent {
  return { ...prepared, hostname, url: keepUrl ? prepared.url : undefined };
}

function splitUrlTarget(target: string): { scheme: string; host: string; path: string } | undefined {
  const match = /^(https?):\/\/([^/:]+)(?::[^/]*)?(\/.*)?$/.exec(target);
  if (!match) return undefined;
  return { scheme: match[1], host: match[2].toLowerCase(), path: match[3] ?? "" };
}

/** §8: base path without its trailing `/`, plus the rule path, runs of `/` collapsed. */
export function effectivePathPattern(basePath: string, rulePath: string): string {
  const base = basePath.endsWith("/") ? basePath.slice(0, -1) : basePath;
  return (base + rulePath).replace(/\/{2,}/g, "/");
}

function compileRule(rule: Rule, index: number): CompiledRule {
  const base = {
    index,
    rule,
    protocol: rule.protocol,
    ports: rule.port === "*" ? "*" as const : new Set(rule.port),
    attributes: compileAttributes(rule.attrs ?? {}),
  };
  const broken = { ...base, broken: true };
  switch (rule.type) {
    case "host":
    case "wildcard_host":
    case "dns_host":
    case "dns_wildcard_host":
      return { ...base, broken: false, host: compileHostPattern(rule.target) };
    case "ip": {
      const address = parseIpv4(rule.target);
      if (address === undefined) return broken;
      return { ...base, broken: false, network: address, mask: 0xffffffff, prefixLength: 32 };
    }
    case "cidr": {
      const cidr = parseCidr(rule.target);
      if (!cidr) return broken;
      return {
        ...base,
        broken: false,
        network: cidr.network,
        mask: cidr.mask,
        prefixLength: cidr.prefixLength,
      };
    }
    case "url":
    case "path": {
      const parts = splitUrlTarget(rule.type === "url" ? rule.target : rule.url_base ?? "");
      if (!parts) return broken;
      const pattern = rule.type === "url" ? parts.path : effectivePathPattern(parts.path, rule.target);
      if (!pattern.startsWith("/")) return broken;
      const methods = rule.methods === null || rule.methods === undefined
        ? "*" as const
        : rule.methods.includes("*")
        ? "*" as const
        : new Set(rule.methods.map((method) => method.toUpperCase()));
      return {
        ...base,
        broken: false,
        host: compileHostPattern(parts.host),
        hostIpv4: parseIpv4(parts.host),
        hostText: parts.host,
        scheme: parts.scheme,
        path: compilePathPattern(pattern),
        methods,
      };
    }
    default:
      return broken;
  }
}

function portMatches(compiled: CompiledRule, port: number): boolean {
  return compiled.ports === "*" || compiled.ports.has(port);
}

/** Whether a url/path rule's host accepts a URL host or SNI (§10.2: IPv4 equal; wildcards if `*`). */
function urlHostMatches(compiled: CompiledRule, host: string): boolean {
  if (compiled.hostIpv4 !== undefined) return compiled.hostText === host;
  return compiled.host !== undefined && compiledHostMatches(compiled.host, host);
}

export function isHostnameBased(compiled: CompiledRule): boolean {
  const type = compiled.rule.type;
  return type === "host" || type === "wildcard_host" ||
    ((type === "url" || type === "path") && compiled.hostIpv4 === undefined);
}

export function isDnsOnly(compiled: CompiledRule): boolean {
  return compiled.rule.type === "dns_host" || compiled.rule.type === "dns_wildcard_host";
}

/** §10.2 generic match of one compiled rule (no corroboration). */
export function genericMatches(compiled: CompiledRule, prepared: PreparedEvent): boolean {
  if (compiled.broken || prepared.protocol !== compiled.protocol) return false;
  if (!portMatches(compiled, prepared.dstPort)) return false;
  switch (compiled.rule.type) {
    case "ip":
    case "cidr":
      if (prepared.dstIpv4 === undefined) return false;
      if (((prepared.dstIpv4 & compiled.mask!) >>> 0) !== compiled.network) return false;
      break;
    case "host":
    case "wildcard_host":
      if (prepared.hostname === undefined || !compiledHostMatches(compiled.host!, prepared.hostname)) {
        return false;
      }
      break;
    case "url":
    case "path": {
      const url = prepared.url;
      if (url === undefined || url.scheme !== compiled.scheme) return false;
      if (!urlHostMatches(compiled, url.host)) return false;
      if (!pathMatches(compiled.path!, url.path)) return false;
      if (compiled.methods !== "*" && !compiled.methods!.has(prepared.method)) return false;
      break;
    }
    default:
      return false; // dns_* rules only permit names (§10.6)
  }
  return compiled.attributes(prepared.event);
}

/** TLS-stage pre-match of a url/path rule: protocol, port, host vs SNI, attributes (§10.7). */
export function preMatches(compiled: CompiledRule, prepared: PreparedEvent, sni: string): boolean {
  const type = compiled.rule.type;
  if (compiled.broken || (type !== "url" && type !== "path")) return false;
  if (prepared.protocol !== compiled.protocol || !portMatches(compiled, prepared.dstPort)) return false;
  return urlHostMatches(compiled, sni) && compiled.attributes(prepared.event);
}

/** §10.6 part 2: a rule permits resolving `name` by hostname only (port/protocol ignored). */
export function nameMatches(compiled: CompiledRule, prepared: PreparedEvent, name: string): boolean {
  if (compiled.broken) return false;
  switch (compiled.rule.type) {
    case "host":
    case "wildcard_host":
    case "dns_host":
    case "dns_wildcard_host":
      if (!compiledHostMatches(compiled.host!, name)) return false;
      break;
    case "url":
    case "path":
      if (!urlHostMatches(compiled, name)) return false;
      break;
    default:
      return false;
  }
  return compiled.attributes(prepared.event);
}

/** §10.6 part 1: a udp ip/cidr rule matches the resolver (dst_ip, dst_port), attributes included. */
export function resolverMatches(compiled: CompiledRule, prepared: PreparedEvent): boolean {
  const type = compiled.rule.type;
  if (compiled.broken || (type !== "ip" && type !== "cidr") || compiled.protocol !== "udp") return false;
  if (prepared.dstIpv4 === undefined || !portMatches(compiled, prepared.dstPort)) return false;
  if (((prepared.dstIpv4 & compiled.mask!) >>> 0) !== compiled.network) return false;
  return compiled.attributes(prepared.event);
}

function pushTo<K, T>(map: Map<K, T[]>, key: K, value: T) {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/**
 * Host patterns → values. Exact names in one map; subdomain patterns with a literal first label by
 * that label plus the base; patterns whose (first) label is a glob by their base and then by the glob's
 * literal prefix (the text before its first `*`), so that `cdn1-*.x.net … cdn9999-*.x.net` do not all
 * land in one bucket. `lookup` returns lists that are a superset of the matches (verify each).
 */
class HostIndex<T> {
  readonly #exact = new Map<string, T[]>();
  readonly #literalSuffix = new Map<string, T[]>();
  readonly #globLabel = new Map<string, Map<string, T[]>>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(pattern: HostPattern, value: T): void {
    this.#size++;
    if (pattern.form === "exact") return pushTo(this.#exact, pattern.name, value);
    const star = pattern.first.indexOf("*");
    if (star < 0) return pushTo(this.#literalSuffix, pattern.indexKey, value);
    let byPrefix = this.#globLabel.get(pattern.base.join("."));
    if (!byPrefix) {
      byPrefix = new Map();
      this.#globLabel.set(pattern.base.join("."), byPrefix);
    }
    pushTo(byPrefix, pattern.first.slice(0, star), value);
  }

  lookup(hostname: string, into: T[][]): void {
    if (this.#size === 0) return;
    const exact = this.#exact.get(hostname);
    if (exact) into.push(exact);
    if (this.#literalSuffix.size === 0 && this.#globLabel.size === 0) return;
    // Walk the labels: `labelStart` is where label i begins, `rest` is the name after it.
    let labelStart = 0;
    for (;;) {
      const dot = hostname.indexOf(".", labelStart);
      const suffix = labelStart === 0 ? hostname : hostname.slice(labelStart);
      const literal = this.#literalSuffix.get(suffix);
      if (literal) into.push(literal);
      const rest = dot < 0 ? "" : hostname.slice(dot + 1);
      const byPrefix = this.#globLabel.get(rest);
      if (byPrefix) {
        const label = dot < 0 ? suffix : hostname.slice(labelStart, dot);
        for (let length = 0; length <= label.length; length++) {
          const list = byPrefix.get(label.slice(0, length));
          if (list) into.push(list);
        }
      }
      if (dot < 0) break;
      labelStart = dot + 1;
    }
  }
}

/** url/path rules of one host pattern, sub-indexed by the literal prefix of their path pattern. */
type UrlBucket = { all: number[]; byPathPrefix: Map<string, number[]> };

/** Literal leading segments of a path pattern (up to the first segment containing `*`), joined. */
function literalPathPrefix(path: PathPattern): string {
  const literal: string[] = [];
  for (const segment of path.segments) {
    if (segment.includes("*")) break;
    literal.push(segment);
  }
  return literal.join("/");
}

/** Every prefix (by segments) of a request path, as `literalPathPrefix` would write it. */
function requestPathPrefixes(rawPath: string): string[] {
  const path = requestPathOf(rawPath);
  const trimmed = path !== "/" && path.endsWith("/") ? path.slice(0, -1) : path;
  const prefixes: string[] = [];
  let at = 0;
  for (;;) {
    const slash = trimmed.indexOf("/", at);
    prefixes.push(slash < 0 ? trimmed : trimmed.slice(0, slash));
    if (slash < 0) return prefixes;
    at = slash + 1;
  }
}

/** The indexes of one subset of the rules (all of them, or only the flagged ones). */
class RuleIndexes {
  readonly netHosts = new HostIndex<number>(); // host, wildcard_host
  readonly dnsNames = new HostIndex<number>(); // dns_host, dns_wildcard_host
  readonly urlHosts = new HostIndex<UrlBucket>(); // url, path (one bucket per host pattern text)
  readonly #urlBuckets = new Map<string, UrlBucket>();
  readonly #ipExact = new Map<number, number[]>();
  /** prefix length → network → rule indexes; `#prefixLengths` lists the lengths present. */
  readonly #cidrs = new Map<number, Map<number, number[]>>();
  readonly #prefixLengths: number[] = [];

  constructor(rules: readonly CompiledRule[]) {
    for (const compiled of rules) {
      if (compiled.broken) continue;
      const type = compiled.rule.type;
      if (type === "host" || type === "wildcard_host") this.netHosts.add(compiled.host!, compiled.index);
      else if (type === "dns_host" || type === "dns_wildcard_host") {
        this.dnsNames.add(compiled.host!, compiled.index);
      } else if (type === "url" || type === "path") this.#addUrl(compiled);
      else if (compiled.prefixLength === 32) pushTo(this.#ipExact, compiled.network!, compiled.index);
      else if (compiled.prefixLength !== undefined) {
        let networks = this.#cidrs.get(compiled.prefixLength);
        if (!networks) {
          networks = new Map();
          this.#cidrs.set(compiled.prefixLength, networks);
          this.#prefixLengths.push(compiled.prefixLength);
        }
        pushTo(networks, compiled.network!, compiled.index);
      }
    }
  }

  #addUrl(compiled: CompiledRule): void {
    const key = compiled.hostText!;
    let bucket = this.#urlBuckets.get(key);
    if (!bucket) {
      bucket = { all: [], byPathPrefix: new Map() };
      this.#urlBuckets.set(key, bucket);
      this.urlHosts.add(compiled.host!, bucket);
    }
    bucket.all.push(compiled.index);
    pushTo(bucket.byPathPrefix, literalPathPrefix(compiled.path!), compiled.index);
  }

  ip(address: number | undefined, into: number[][]): void {
    if (address === undefined) return;
    const exact = this.#ipExact.get(address);
    if (exact) into.push(exact);
    for (const prefixLength of this.#prefixLengths) {
      const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
      const list = this.#cidrs.get(prefixLength)!.get((address & mask) >>> 0);
      if (list) into.push(list);
    }
  }

  /** url/path rules whose host may match, all paths (pre-match and DNS names). */
  urlByHost(host: string, into: number[][]): void {
    if (this.urlHosts.size === 0) return;
    const buckets: UrlBucket[][] = [];
    this.urlHosts.lookup(host, buckets);
    for (const list of buckets) for (const bucket of list) into.push(bucket.all);
  }

  /** url/path rules whose host and literal path prefix may match the request. */
  urlByRequest(url: ParsedUrl, into: number[][]): void {
    if (this.urlHosts.size === 0) return;
    const buckets: UrlBucket[][] = [];
    this.urlHosts.lookup(url.host, buckets);
    if (buckets.length === 0) return;
    const prefixes = requestPathPrefixes(url.path);
    for (const list of buckets) {
      for (const bucket of list) {
        for (const prefix of prefixes) {
          const rules = bucket.byPathPrefix.get(prefix);
          if (rules) into.push(rules);
        }
      }
    }
  }

  generic(prepared: PreparedEvent): number[][] {
    const lists: number[][] = [];
    this.ip(prepared.dstIpv4, lists);
    if (prepared.hostname !== undefined) this.netHosts.lookup(prepared.hostname, lists);
    if (prepared.url !== undefined) this.urlByRequest(prepared.url, lists);
    return lists;
  }

  names(name: string): number[][] {
    const lists: number[][] = [];
    this.netHosts.lookup(name, lists);
    this.dnsNames.lookup(name, lists);
    this.urlByHost(name, lists);
    return lists;
  }
}

/**
 * The first rule (lowest index) in ascending candidate lists for which `accept` holds: a lazy k-way
 * merge, so a hit early in rule order costs little however long the lists are.
 */
function firstAccepted(
  lists: readonly number[][],
  rules: readonly CompiledRule[],
  accept: (compiled: CompiledRule) => boolean,
): CompiledRule | undefined {
  if (lists.length === 1) {
    for (const index of lists[0]) if (accept(rules[index])) return rules[index];
    return undefined;
  }
  const positions = new Array<number>(lists.length).fill(0);
  let previous = -1;
  for (;;) {
    let best = -1, bestIndex = Infinity;
    for (let l = 0; l < lists.length; l++) {
      const position = positions[l];
      if (position < lists[l].length && lists[l][position] < bestIndex) {
        bestIndex = lists[l][position];
        best = l;
      }
    }
    if (best < 0) return undefined;
    positions[best]++;
    if (bestIndex === previous) continue; // the same rule reached through two lists
    previous = bestIndex;
    if (accept(rules[bestIndex])) return rules[bestIndex];
  }
}

/** Which rules to search: all, or only those carrying a flag (§10.7 passthrough/insecure lookups). */
export type RuleSubset = "all" | "passthrough" | "insecure";

/** Indexed, compiled form of one rules array. */
export class CompiledRules {
  readonly rules: readonly CompiledRule[];
  readonly #indexes: Record<RuleSubset, RuleIndexes>;

  constructor(rules: readonly Rule[]) {
    this.rules = rules.map(compileRule);
    this.#indexes = {
      all: new RuleIndexes(this.rules),
      passthrough: new RuleIndexes(this.rules.filter((compiled) => compiled.rule.passthrough === true)),
      insecure: new RuleIndexes(this.rules.filter((compiled) => compiled.rule.insecure === true)),
    };
  }

  /**
   * First rule of the subset, in rule order, that passes the generic match and `accept`
   * (defaults: all rules, no extra condition).
   */
  firstGeneric(
    prepared: PreparedEvent,
    accept: (compiled: CompiledRule) => boolean = () => true,
    subset: RuleSubset = "all",
  ): CompiledRule | undefined {
    const lists = this.#indexes[subset].generic(prepared);
    return firstAccepted(
      lists,
      this.rules,
      (compiled) => genericMatches(compiled, prepared) && accept(compiled),
    );
  }

  /** First url/path rule admitting the TLS handshake for `sni` (hostname-only pre-match). */
  firstPreMatch(
    prepared: PreparedEvent,
    sni: string,
    accept: (compiled: CompiledRule) => boolean = () => true,
    subset: RuleSubset = "all",
  ): CompiledRule | undefined {
    const lists: number[][] = [];
    this.#indexes[subset].urlByHost(sni, lists);
    return firstAccepted(
      lists,
      this.rules,
      (compiled) => preMatches(compiled, prepared, sni) && accept(compiled),
    );
  }

  /** First rule permitting the DNS name (§10.6 part 2). */
  firstNameRule(prepared: PreparedEvent, name: string): CompiledRule | undefined {
    return firstAccepted(
      this.#indexes.all.names(name),
      this.rules,
      (compiled) => nameMatches(compiled, prepared, name),
    );
  }

  /** First udp ip/cidr rule allowing the resolver (§10.6 part 1). */
  firstResolverRule(prepared: PreparedEvent): CompiledRule | undefined {
    const lists: number[][] = [];
    this.#indexes.all.ip(prepared.dstIpv4, lists);
    return firstAccepted(lists, this.rules, (compiled) => resolverMatches(compiled, prepared));
  }

  /** Whether any ip/cidr rule fully matches the event (corroborates a hostname, §10.7). */
  anyIpRuleMatches(prepared: PreparedEvent): boolean {
    const lists: number[][] = [];
    this.#indexes.all.ip(prepared.dstIpv4, lists);
    return firstAccepted(lists, this.rules, (compiled) => genericMatches(compiled, prepared)) !== undefined;
  }

  /** §10.2 generic match, dual check (§10.6) for a `dns` event with a name; first match reported. */
  match(event: ConnectionEvent): RuleMatch | undefined {
    const prepared = prepareEvent(event);
    let found: CompiledRule | undefined;
    if (event.type === "dns" && typeof event.name === "string" && event.name !== "") {
      const name = normalizeHostname(event.name);
      found = this.firstResolverRule(prepared) ? this.firstNameRule(prepared, name) : undefined;
    } else {
      found = this.firstGeneric(prepared);
    }
    return found ? { rule: found.rule, index: found.index } : undefined;
  }
}

const compiledByRules = new WeakMap<readonly Rule[], CompiledRules>();

/** The compiled, indexed form of a rules array, built once per array identity. */
export function compiledRules(rules: readonly Rule[]): CompiledRules {
  let compiled = compiledByRules.get(rules);
  if (!compiled) {
    compiled = new CompiledRules(rules);
    compiledByRules.set(rules, compiled);
  }
  return compiled;
}

/** Un-indexed reference: the first rule (linear scan) matching as `CompiledRules.match` would. */
export function linearMatch(rules: readonly Rule[], event: ConnectionEvent): RuleMatch | undefined {
  const compiled = rules.map(compileRule);
  const prepared = prepareEvent(event);
  if (event.type === "dns" && typeof event.name === "string" && event.name !== "") {
    const name = normalizeHostname(event.name);
    if (!compiled.some((rule) => resolverMatches(rule, prepared))) return undefined;
    const found = compiled.find((rule) => nameMatches(rule, prepared, name));
    return found ? { rule: found.rule, index: found.index } : undefined;
  }
  const found = compiled.find((rule) => genericMatches(rule, prepared));
  return found ? { rule: found.rule, index: found.index } : undefined;
}
