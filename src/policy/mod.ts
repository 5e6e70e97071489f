// Public surface of the policy library (policy.md §13). Exactly these names are exported.
export type {
  AttrValue,
  ConnectionEvent,
  Decision,
  PolicyIssue,
  PolicyOptions,
  Rule,
  RuleMatch,
  RuleType,
} from "./types.ts";
export { parsePolicy, Policy, PolicyError, validatePolicy } from "./policy.ts";
export { DnsCache } from "./dns_cache.ts";
export { Enforcer } from "./enforcer.ts";
