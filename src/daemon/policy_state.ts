// The daemon's current policy: parsed once at start (enforce: any error refuses; audit: bad lines
// are reported and skipped), swapped atomically on reload. One DnsCache lives across reloads.

import { DnsCache, Enforcer, parsePolicy, type Policy, PolicyError } from "../policy/mod.ts";
import type { PolicyIssue } from "../policy/types.ts";

export type ParsedDaemonPolicy = {
  policy: Policy;
  /** errors of lines skipped (audit mode only) */
  skipped: PolicyIssue[];
  warnings: readonly PolicyIssue[];
};

/**
 * Parses the policy text. Enforce mode: throws PolicyError on any error. Audit mode: lines with
 * errors are blanked (line numbers stay) and reported in `skipped`.
 */
export function parseDaemonPolicy(
  text: string,
  options: { audit: boolean; repository?: string; runner?: boolean },
): ParsedDaemonPolicy {
  // Runner mode: the built-in runner rules first, the runner cgroup as default attribute.
  const policyOptions = { repository: options.repository ?? "owner/repo", runner: options.runner ?? false };
  if (!options.audit) {
    const policy = parsePolicy(text, policyOptions);
    return { policy, skipped: [], warnings: policy.warnings };
  }
  const lines = text.split("\n");
  const skipped: PolicyIssue[] = [];
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const policy = parsePolicy(lines.join("\n"), policyOptions);
      return { policy, skipped, warnings: policy.warnings };
    } catch (error) {
      if (!(error instanceof PolicyError)) throw error;
      let blanked = 0;
      for (const issue of error.issues) {
        const index = issue.line - 1;
        if (index >= 0 && index < lines.length && lines[index] !== "") {
          lines[index] = "";
          blanked++;
          skipped.push(issue);
        }
      }
      if (blanked === 0) throw error;
    }
  }
  throw new Error("Cannot parse policy: too many rounds of skipping bad lines");
}

export function formatIssue(issue: PolicyIssue): string {
  return `${issue.line}:${issue.column}: ${issue.message}`;
}

export class PolicyState {
  #snapshot: { enforcer: Enforcer; policy: Policy };
  readonly audit: boolean;
  readonly dnsCache = new DnsCache();

  constructor(policy: Policy, audit: boolean) {
    this.audit = audit;
    this.#snapshot = { enforcer: this.#make(policy), policy };
  }

  #make(policy: Policy): Enforcer {
    return new Enforcer(policy, { audit: this.audit, dnsCache: this.dnsCache, corroborate: true });
  }

  get policy(): Policy {
    return this.#snapshot.policy;
  }

  /** The Enforcer to use for the next decision; a reload replaces it in one assignment. */
  get enforcer(): Enforcer {
    return this.#snapshot.enforcer;
  }

  /** Enforcer and policy of the same load, for rule source texts in log lines. */
  get snapshot(): { enforcer: Enforcer; policy: Policy } {
    return this.#snapshot;
  }

  swap(policy: Policy): void {
    this.#snapshot = { enforcer: this.#make(policy), policy };
  }
}
