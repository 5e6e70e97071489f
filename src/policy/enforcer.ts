// Connection decisions (policy.md §10.7, §12 audit mode, §13). Pure.
import type { ConnectionEvent, Decision } from "./types.ts";
import type { Policy } from "./policy.ts";
import { DnsCache } from "./dns_cache.ts";
import {
  type CompiledRule,
  type CompiledRules,
  compiledRules,
  isHostnameBased,
  normalizeEventHost,
  type PreparedEvent,
  prepareEvent,
  withHostname,
} from "./matcher.ts";
import { normalizeHostname } from "./hostname.ts";

export type EnforcerOptions = { audit?: boolean; dnsCache?: DnsCache; corroborate?: boolean };

const EVENT_TYPES = new Set(["http", "https", "tcp", "udp", "dns"]);

type Verdict = {
  match?: CompiledRule;
  hostname?: string;
  reason: string;
  passthrough?: boolean;
  insecure?: boolean;
};

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class Enforcer {
  readonly #policy: Policy;
  readonly #audit: boolean;
  readonly #corroborate: boolean;
  readonly #dnsCache: DnsCache;

  constructor(policy: Policy, options: EnforcerOptions = {}) {
    if (policy === null || typeof policy !== "object" || !Array.isArray(policy.rules)) {
      throw new TypeError("Cannot create Enforcer: policy must have a rules array");
    }
    if (options === null || typeof options !== "object") {
      throw new TypeError("Cannot create Enforcer: options must be an object");
    }
    if (options.dnsCache !== undefined && !(options.dnsCache instanceof DnsCache)) {
      throw new TypeError("Cannot create Enforcer: dnsCache must be a DnsCache");
    }
    this.#policy = policy;
    this.#audit = options.audit === true;
    this.#corroborate = options.corroborate === true;
    this.#dnsCache = options.dnsCache ?? new DnsCache();
  }

  /** Records an allowed DNS response: every answer IP maps to the query name. */
  recordDnsResponse(name: string, ips: string[], ttlSeconds: number): void {
    this.#dnsCache.add(name, ips, ttlSeconds);
  }

  /** Never throws: an exception while deciding denies with `internal error: …`. */
  decide(event: ConnectionEvent, options: { mitm?: boolean } = {}): Decision {
    let verdict: Verdict;
    try {
      verdict = this.#verdict(event, options?.mitm === true);
    } catch (error) {
      verdict = { reason: `internal error: ${describe(error)}` };
    }
    const allowedByPolicy = verdict.match !== undefined;
    const passthrough = allowedByPolicy && verdict.passthrough === true;
    const allowed = allowedByPolicy || this.#audit;
    const policy = allowedByPolicy ? "allow" : "deny";
    const insecure = allowedByPolicy && !passthrough && verdict.insecure === true;
    const { match, hostname, reason } = verdict;
    // Key order follows the Decision type so that serialised decisions read consistently.
    const decision: Decision = match
      ? hostname !== undefined
        ? { allowed, policy, rule: match.rule, index: match.index, passthrough, insecure, hostname, reason }
        : { allowed, policy, rule: match.rule, index: match.index, passthrough, insecure, reason }
      : hostname !== undefined
      ? { allowed, policy, passthrough, insecure, hostname, reason }
      : { allowed, policy, passthrough, insecure, reason };
    return decision;
  }

  #verdict(event: ConnectionEvent, mitm: boolean): Verdict {
    if (event === null || typeof event !== "object") throw new Error("event is not an object");
    if (!EVENT_TYPES.has(event.type)) throw new Error(`unknown event type ${JSON.stringify(event.type)}`);
    if (typeof event.dst_ip !== "string") throw new Error("dst_ip is not a string");
    if (typeof event.dst_port !== "number") throw new Error("dst_port is not a number");
    const compiled = compiledRules(this.#policy.rules);
    const prepared = prepareEvent(event);

    if (event.url !== undefined) {
      if (typeof event.url !== "string" || prepared.url === undefined) {
        throw new Error(`Cannot parse request URL ${JSON.stringify(event.url)}`);
      }
      const sni = normalizeEventHost(event.host);
      if (sni !== undefined && sni !== prepared.url.host) {
        return { reason: "host does not match SNI", hostname: prepared.url.host };
      }
    }

    switch (event.type) {
      case "dns":
        if (typeof event.name === "string" && event.name !== "") {
          return this.#dualCheck(compiled, prepared, event.name);
        }
        // Without a name only udp ip/cidr rules can match (§10.6): a `host` field must not let a
        // hostname rule with /udp allow the flow.
        return this.#generic(compiled, withHostname(prepared, undefined), false);
      case "udp":
        return this.#generic(compiled, withHostname(prepared, undefined), false);
      case "tcp":
        return this.#byCachedNames(compiled, prepared, false);
      case "http":
        return this.#generic(compiled, prepared, this.#corroborate);
      case "https":
        if (prepared.url !== undefined) return this.#generic(compiled, prepared, false);
        if (normalizeEventHost(event.host) !== undefined) return this.#tlsWithSni(compiled, prepared, mitm);
        return this.#byCachedNames(compiled, prepared, mitm);
    }
  }

  /** Corroboration state for one decision, computed lazily (§10.7). */
  #corroborator(compiled: CompiledRules, prepared: PreparedEvent) {
    let cachedNames: string[] | undefined;
    let ipRuleMatches: boolean | undefined;
    return (rule: CompiledRule, hostname: string | undefined): boolean => {
      if (rule.hostIpv4 !== undefined) return rule.hostIpv4 === prepared.dstIpv4;
      if (!isHostnameBased(rule)) return true;
      if (hostname === undefined) return false;
      cachedNames ??= this.#dnsCache.lookupAll(prepared.event.dst_ip);
      if (cachedNames.includes(hostname)) return true;
      ipRuleMatches ??= compiled.anyIpRuleMatches(prepared);
      return ipRuleMatches;
    };
  }

  /** The hostname a rule was matched against: the URL host for url/path rules. */
  static #matchedName(rule: CompiledRule, prepared: PreparedEvent): string | undefined {
    const type = rule.rule.type;
    return type === "url" || type === "path" ? prepared.url?.host : prepared.hostname;
  }

  #generic(compiled: CompiledRules, prepared: PreparedEvent, corroborate: boolean): Verdict {
    const hostname = prepared.url?.host ?? prepared.hostname;
    if (!corroborate) {
      const match = compiled.firstGeneric(prepared);
      return match ? { match, hostname, reason: "rule matched" } : { hostname, reason: "no matching rule" };
    }
    const corroborated = this.#corroborator(compiled, prepared);
    let skipped = false;
    const match = compiled.firstGeneric(prepared, (rule) => {
      if (corroborated(rule, Enforcer.#matchedName(rule, prepared))) return true;
      skipped = true;
      return false;
    });
    if (match) return { match, hostname, reason: "rule matched" };
    return { hostname, reason: skipped ? "host not corroborated" : "no matching rule" };
  }

  /** §10.6: resolver (udp ip/cidr rule) first, then the name. */
  #dualCheck(compiled: CompiledRules, prepared: PreparedEvent, rawName: string): Verdict {
    const name = normalizeHostname(rawName);
    if (!compiled.firstResolverRule(prepared)) return { hostname: name, reason: "resolver not allowed" };
    const match = compiled.firstNameRule(prepared, name);
    return match
      ? { match, hostname: name, reason: "rule matched" }
      : { hostname: name, reason: "name not allowed" };
  }

  /** ClientHello with SNI: generic match, pre-match when intercepting, then passthrough/insecure. */
  #tlsWithSni(compiled: CompiledRules, prepared: PreparedEvent, mitm: boolean): Verdict {
    const sni = prepared.hostname!;
    const match = compiled.firstGeneric(prepared) ??
      (mitm ? compiled.firstPreMatch(prepared, sni) : undefined);
    if (!match) return { hostname: sni, reason: "no matching rule" };
    if (!mitm) return { match, hostname: sni, reason: "rule matched" };
    const flags = this.#flags(compiled, prepared, sni, true);
    return { match, hostname: sni, reason: "rule matched", ...flags };
  }

  /** Whether a fully matching passthrough (if allowed) or insecure rule applies, corroborated if on. */
  #flags(
    compiled: CompiledRules,
    prepared: PreparedEvent,
    hostname: string | undefined,
    allowPassthrough: boolean,
  ) {
    const corroborated = this.#corroborate ? this.#corroborator(compiled, prepared) : () => true;
    const counts = (rule: CompiledRule) => corroborated(rule, hostname);
    if (allowPassthrough && compiled.firstGeneric(prepared, counts, "passthrough")) {
      return { passthrough: true };
    }
    const insecure = compiled.firstGeneric(prepared, counts, "insecure") ??
      (hostname === undefined ? undefined : compiled.firstPreMatch(prepared, hostname, counts, "insecure"));
    return { insecure: insecure !== undefined };
  }

  /**
   * tcp, and https without SNI: each DNS-cache name for dst_ip (most recent first), then the IP alone.
   * The SNI is not consulted; cached names are corroborated by construction.
   */
  #byCachedNames(compiled: CompiledRules, prepared: PreparedEvent, mitm: boolean): Verdict {
    const names = this.#dnsCache.lookupAll(prepared.event.dst_ip);
    const attempts: Array<string | undefined> = [...names, undefined];
    for (const name of attempts) {
      const candidate = withHostname(prepared, name);
      const match = compiled.firstGeneric(candidate) ??
        (mitm && name !== undefined ? compiled.firstPreMatch(candidate, name) : undefined);
      if (!match) continue;
      const verdict: Verdict = { match, hostname: name, reason: "rule matched" };
      if (mitm) verdict.insecure = this.#flagsForCached(compiled, candidate, name);
      return verdict;
    }
    return { reason: "no matching rule" };
  }

  #flagsForCached(compiled: CompiledRules, prepared: PreparedEvent, name: string | undefined): boolean {
    if (compiled.firstGeneric(prepared, undefined, "insecure")) return true;
    return name !== undefined && compiled.firstPreMatch(prepared, name, undefined, "insecure") !== undefined;
  }
}
