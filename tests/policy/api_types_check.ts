// Type-level check of the public API against policy.md §13, word for word. The `Spec*` types are
// the spec's declarations copied as written; every `same<Equal<…>>()` compiles only if the library
// type is identical. Compiled twice: by `deno test` (through api_surface_test.ts) against the
// source, and by the npm build test with tsc against the generated npm-build/types/*.d.ts (it
// rewrites the import below to "@org/egress"). No runtime effect, no Deno or node: import.
import type * as lib from "../../mod.ts";

// ---- policy.md §13, as written ----------------------------------------------------------------
type SpecPolicyIssue = { line: number; column: number; message: string; text: string };
type SpecPolicyOptions = {
  defaults?: {
    port?: number[] | "*";
    protocol?: "tcp" | "udp";
    methods?: string[];
    attrs?: Record<string, string | { value: string; literal: boolean }>;
  };
  repository?: string;
  runner?: boolean;
};
type SpecRuleType =
  | "host"
  | "wildcard_host"
  | "ip"
  | "cidr"
  | "url"
  | "path"
  | "dns_host"
  | "dns_wildcard_host";
type SpecAttrValue = string | { value: string; literal: boolean };
type SpecRule = {
  type: SpecRuleType;
  target: string;
  port: number[] | "*";
  protocol: "tcp" | "udp";
  methods: string[] | null;
  url_base: string | null;
  attrs: Record<string, SpecAttrValue>;
  passthrough?: true;
  insecure?: true;
  line: number;
};
type SpecConnectionEvent = {
  type: "http" | "https" | "tcp" | "udp" | "dns";
  dst_ip: string;
  dst_port: number;
  host?: string;
  url?: string;
  method?: string;
  name?: string;
  exe?: string;
  cmdline?: string[];
  cgroup?: string;
  step?: string;
  action?: string;
  image?: string;
};
type SpecRuleMatch = { rule: SpecRule; index: number };
type SpecPolicy = {
  readonly rules: readonly SpecRule[];
  readonly warnings: readonly SpecPolicyIssue[];
  match(event: SpecConnectionEvent): SpecRuleMatch | undefined;
  toJSON(): SpecRule[];
};
type SpecDnsCacheOptions = { capacity?: number; minTtl?: number; maxTtl?: number; now?: () => number };
type SpecDnsCache = {
  add(name: string, ips: string[], ttlSeconds: number): void;
  lookup(ip: string): string | undefined;
  lookupAll(ip: string): string[];
  readonly size: number;
};
type SpecDecision = {
  allowed: boolean;
  policy: "allow" | "deny";
  rule?: SpecRule;
  index?: number;
  passthrough: boolean;
  insecure: boolean;
  hostname?: string;
  reason: string;
};
type SpecEnforcerOptions = { audit?: boolean; dnsCache?: lib.DnsCache; corroborate?: boolean };
type SpecEnforcer = {
  decide(event: SpecConnectionEvent, options?: { mitm?: boolean }): SpecDecision;
  recordDnsResponse(name: string, ips: string[], ttlSeconds: number): void;
};

// ---- exact type equality ------------------------------------------------------------------------
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
/** Compiles only when `ok` is `true`. */
export function same<T extends true>(_ok?: T): void {}

same<Equal<lib.PolicyIssue, SpecPolicyIssue>>();
same<Equal<lib.PolicyOptions, SpecPolicyOptions>>();
same<Equal<lib.RuleType, SpecRuleType>>();
same<Equal<lib.AttrValue, SpecAttrValue>>();
same<Equal<lib.Rule, SpecRule>>();
same<Equal<lib.ConnectionEvent, SpecConnectionEvent>>();
same<Equal<lib.RuleMatch, SpecRuleMatch>>();
same<Equal<lib.Decision, SpecDecision>>();

same<Equal<typeof lib.parsePolicy, (text: string, options?: SpecPolicyOptions) => lib.Policy>>();
same<
  Equal<
    typeof lib.validatePolicy,
    (text: string, options?: SpecPolicyOptions) => {
      rules: SpecRule[];
      errors: SpecPolicyIssue[];
      warnings: SpecPolicyIssue[];
    }
  >
>();

same<Equal<keyof lib.Policy, keyof SpecPolicy>>();
same<Equal<Pick<lib.Policy, keyof SpecPolicy>, SpecPolicy>>();

same<Equal<Pick<lib.PolicyError, "issues">, { readonly issues: SpecPolicyIssue[] }>>();
same<lib.PolicyError extends Error ? true : false>();

same<Equal<keyof lib.DnsCache, keyof SpecDnsCache>>();
same<Equal<Pick<lib.DnsCache, keyof SpecDnsCache>, SpecDnsCache>>();
same<Equal<ConstructorParameters<typeof lib.DnsCache>, [options?: SpecDnsCacheOptions]>>();

same<Equal<keyof lib.Enforcer, keyof SpecEnforcer>>();
same<Equal<Pick<lib.Enforcer, keyof SpecEnforcer>, SpecEnforcer>>();
same<
  Equal<ConstructorParameters<typeof lib.Enforcer>, [policy: lib.Policy, options?: SpecEnforcerOptions]>
>();
