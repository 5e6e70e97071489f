// Sidecar composition root (sidecar.md §1): host-network refusal, enforcement (nftables table or
// the `dns` fallback), DNS proxy, policy state with atomic updates, status and cleanup.

import type { ConnectionLog } from "../log/connection_log.ts";
import type { OperationalLog } from "../log/operational_log.ts";
import type { AddressRange, Family } from "./address.ts";
import { type AnswerAddress, SidecarDnsProxy } from "./dns.ts";
import {
  buildDynamicUpdate,
  buildTableTransaction,
  clampTtl,
  type DynamicElement,
  dynamicElementsFor,
  dynamicKey,
  Nft,
} from "./nft.ts";
import { type CompiledPolicy, compilePolicy, DENY_ALL, judgeName, type SidecarPolicy } from "./policy.ts";
import { flushConntrack } from "./conntrack.ts";
import { IptablesRedirect } from "./redirect.ts";
import type { Upstream } from "./upstream.ts";

export type EnforcementLevel = "dns" | "dns+nft";

export type SidecarOptions = {
  mode: EnforcementLevel;
  requireNft: boolean;
  dnsPort: number;
  upstreams: Upstream[];
  mark: number;
  doh: AddressRange[];
  nftPath: string;
  log: ConnectionLog;
  ops: OperationalLog;
  dnsTimeoutMs?: number;
  /** cap on dynamic set elements (default MAX_DYNAMIC_ELEMENTS) */
  maxDynamicElements?: number;
  /** cap on concurrently forwarded DNS queries (default in dns.ts) */
  maxDnsInFlight?: number;
  /** false: keep the namespace's conntrack table at startup (in-process tests in the root namespace) */
  flushConntrack?: boolean;
};

export class SidecarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SidecarError";
  }
}

/**
 * Host-network check (§1.1): equal pod and host IPs (downward API), or a non-loopback interface of
 * this namespace backed by a device. Interface names come from /proc/net/dev, which is per network
 * namespace (a /sys mounted for another namespace lists that namespace's interfaces).
 */
export function hostNetworkReason(
  env: { podIp?: string; hostIp?: string },
  readText: (path: string) => string | undefined,
  exists: (path: string) => boolean,
): string | undefined {
  if (env.podIp && env.hostIp && env.podIp.trim() === env.hostIp.trim()) {
    return `EGRESS_POD_IP equals EGRESS_HOST_IP (${env.podIp.trim()})`;
  }
  const dev = readText("/proc/net/dev") ?? "";
  for (const line of dev.split("\n").slice(2)) {
    const name = line.split(":")[0]?.trim();
    if (!name || name === "lo") continue;
    if (exists(`/sys/class/net/${name}/device`)) return `interface ${name} is backed by a device`;
  }
  return undefined;
}

/** At most this much (and 10 % of the timeout) of an entry's lifetime is given up to skip a refresh. */
const REFRESH_SLACK_MS = 10_000;
/** An element this long past its expiry is gone from the kernel set: a plain `add` recreates it. */
const EXPIRY_MARGIN_MS = 2_000;
/**
 * Upper bound of live dynamic set elements. Each allowed answer may add addresses for up to 360 s;
 * a name under an allowed wildcard whose DNS the app controls could otherwise grow the kernel sets
 * and this process's maps without limit. Beyond it, answers with new addresses get SERVFAIL.
 */
export const MAX_DYNAMIC_ELEMENTS = 65_536;

type Tracked = { family: Family; value: bigint; text: string; expiresAt: number };

export class Sidecar {
  readonly started = new Date();
  level: EnforcementLevel;
  fallbackReason: string | null = null;
  policyUpdates = 0;
  readonly #options: SidecarOptions;
  readonly #nft: Nft;
  #compiled: CompiledPolicy = compilePolicy(DENY_ALL);
  #enforcementInstalled = false;
  #nftTable = false;
  #iptables: IptablesRedirect | undefined;
  #proxy: SidecarDnsProxy | undefined;
  /** name → address key → element data (only names whose answers entered the dynamic sets) */
  #tracked = new Map<string, Map<string, Tracked>>();
  /** dynamicKey → expiry (ms) of what the kernel's dynamic sets hold, as far as we put it there */
  #elements = new Map<string, number>();
  /** #tracked/#elements sizes at which expired entries are swept next (amortised pruning) */
  #sweepAt = 1024;
  #lock: Promise<unknown> = Promise.resolve();

  constructor(options: SidecarOptions) {
    this.#options = options;
    this.level = options.mode;
    this.#nft = new Nft(options.nftPath);
  }

  get policy(): SidecarPolicy {
    return this.#compiled.policy;
  }

  get compiled(): CompiledPolicy {
    return this.#compiled;
  }

  get healthy(): boolean {
    return this.#enforcementInstalled && (this.#proxy?.listening ?? false);
  }

  /** Steps 2–4 of §1 with the deny-all policy. Throws SidecarError when it must not run. */
  async start(): Promise<void> {
    const { ops, mode } = this.#options;
    // 2. the table (with the redirect chain; at level dns the redirect chain only)
    try {
      await this.#nft.apply(
        this.#transaction(DENY_ALL, compilePolicy(DENY_ALL), [], true, mode === "dns+nft"),
      );
      this.#nftTable = true;
    } catch (error) {
      const reason = (error as Error).message;
      if (mode === "dns+nft") {
        if (this.#options.requireNft) {
          throw new SidecarError(`Cannot install nftables enforcement: ${reason}`);
        }
        this.level = "dns";
        this.fallbackReason = reason;
        ops.warn(`enforcement dns: ${reason}`);
      } else {
        ops.info(`DNS redirect: nftables unavailable (${reason}), using iptables`);
      }
    }
    // 3. the DNS proxy
    this.#proxy = new SidecarDnsProxy({
      port: this.#options.dnsPort,
      upstreams: this.#options.upstreams,
      mark: this.#options.mark,
      timeoutMs: this.#options.dnsTimeoutMs,
      maxInFlight: this.#options.maxDnsInFlight,
      hooks: {
        judge: (name) => judgeName(this.#compiled, name),
        onAnswer: (name, _verdict, addresses, ttl) => this.#admit(name, addresses, ttl),
        log: (event) => this.#options.log.write(event),
        warn: (message) => ops.warn(message),
      },
    });
    try {
      await this.#proxy.start();
    } catch (error) {
      await this.stop({ keepEnforcement: true });
      throw new SidecarError(
        `Cannot start the DNS proxy on 127.0.0.1:${this.#options.dnsPort}: ${(error as Error).message}`,
      );
    }
    // 4. redirect: already part of the nft table; else iptables
    if (!this.#nftTable) {
      this.#iptables = new IptablesRedirect(this.#options.mark, this.#options.dnsPort);
      try {
        await this.#iptables.install((message) => ops.warn(message));
      } catch (error) {
        await this.stop({ keepEnforcement: true });
        throw new SidecarError(
          `Cannot redirect DNS: neither nftables nor iptables works: ${(error as Error).message}`,
        );
      }
    }
    // Flows older than the table would pass as established (and UDP/53 ones skip the redirect).
    if (this.#options.flushConntrack !== false) {
      try {
        await flushConntrack();
        ops.info("conntrack flushed: flows opened before the sidecar are judged again");
      } catch (error) {
        ops.warn(`${(error as Error).message}: flows opened before the sidecar keep running`);
      }
    }
    this.#enforcementInstalled = true;
    ops.info(
      `enforcement ${this.level}${
        this.fallbackReason ? ` (fallback: ${this.fallbackReason})` : ""
      }; DNS proxy on ` +
        `127.0.0.1:${this.#options.dnsPort}, upstreams ${
          this.#options.upstreams.map((u) => `${u.address}:${u.port}`).join(", ")
        }`,
    );
  }

  /**
   * Replaces the policy: one nft transaction, then the in-memory swap. Nothing changes on failure.
   * `countUpdate: false` for the policy loaded at startup (`policy_updates` counts changes).
   */
  setPolicy(policy: SidecarPolicy, { countUpdate = true } = {}): Promise<void> {
    return this.#locked(async () => {
      const compiled = compilePolicy(policy);
      if (this.#nftTable && this.level === "dns+nft") {
        const now = Date.now();
        const dynamic: DynamicElement[] = [];
        const keep = new Map<string, Map<string, Tracked>>();
        for (const [name, addresses] of this.#tracked) {
          const verdict = judgeName(compiled, name);
          if (verdict.policy !== "allow" || verdict.grants.length === 0) continue;
          const live = new Map([...addresses].filter(([, t]) => t.expiresAt > now));
          if (live.size === 0) continue;
          keep.set(name, live);
          for (const t of live.values()) {
            const remaining = Math.max(1, Math.ceil((t.expiresAt - now) / 1000));
            dynamic.push(...dynamicElementsFor(verdict.grants, t.family, t.value, remaining));
          }
        }
        await this.#nft.apply(this.#transaction(policy, compiled, dynamic, false, true));
        this.#tracked = keep;
        this.#elements = new Map(dynamic.map((e) => [dynamicKey(e), now + e.timeoutSeconds * 1000]));
      }
      this.#compiled = compiled;
      if (countUpdate) this.policyUpdates++;
      this.#options.ops.info(
        `policy loaded: ${compiled.counts.allow} allow, ${compiled.counts.deny} deny, default ${policy.defaultAction}`,
      );
    });
  }

  /** Dynamic set entries for an allowed answer, in place before the reply is returned. */
  #admit(name: string, addresses: AnswerAddress[], ttl: number): Promise<void> {
    if (this.level !== "dns+nft") return Promise.resolve();
    return this.#locked(async () => {
      // Judged again under the lock: a policy change since the query must win.
      const verdict = judgeName(this.#compiled, name);
      if (verdict.policy !== "allow" || verdict.grants.length === 0) return;
      const timeout = clampTtl(ttl);
      const now = Date.now();
      const expiresAt = now + timeout * 1000;
      // An entry that would gain less than the slack is left alone: an nft run per answer is the
      // main cost of an allowed query.
      const slack = Math.min(REFRESH_SLACK_MS, timeout * 100);
      const added: DynamicElement[] = [];
      const refreshed: DynamicElement[] = [];
      for (const address of addresses) {
        for (const element of dynamicElementsFor(verdict.grants, address.family, address.value, timeout)) {
          const present = this.#elements.get(dynamicKey(element));
          if (present === undefined || present < now - EXPIRY_MARGIN_MS) added.push(element);
          else if (present < expiresAt - slack) refreshed.push(element);
        }
      }
      const cap = this.#options.maxDynamicElements ?? MAX_DYNAMIC_ELEMENTS;
      if (added.length > 0 && this.#elements.size + added.length > cap) {
        this.#sweep(now);
        if (this.#elements.size + added.length > cap) {
          throw new Error(`the dynamic sets are full (${cap} entries)`);
        }
      }
      if (added.length > 0 || refreshed.length > 0) {
        await this.#nft.apply(buildDynamicUpdate(added, refreshed));
        for (const element of [...added, ...refreshed]) this.#elements.set(dynamicKey(element), expiresAt);
      }
      const known = this.#tracked.get(name) ?? new Map<string, Tracked>();
      for (const a of addresses) {
        const key = `${a.family}/${a.value}`;
        known.set(key, { ...a, expiresAt: Math.max(known.get(key)?.expiresAt ?? 0, expiresAt - slack) });
      }
      this.#tracked.set(name, known);
      if (Math.max(this.#tracked.size, this.#elements.size) >= this.#sweepAt) this.#sweep(now);
    });
  }

  /**
   * Forgets elements the kernel has certainly expired and names without live addresses (bounded
   * memory: without it every name ever answered stays until the next policy change). The next
   * sweep waits until the maps have doubled, so the cost per answer stays constant.
   */
  #sweep(now: number): void {
    for (const [key, expiresAt] of this.#elements) {
      if (expiresAt < now - EXPIRY_MARGIN_MS) this.#elements.delete(key);
    }
    for (const [name, addresses] of this.#tracked) {
      for (const [key, t] of addresses) if (t.expiresAt <= now) addresses.delete(key);
      if (addresses.size === 0) this.#tracked.delete(name);
    }
    this.#sweepAt = Math.max(1024, 2 * Math.max(this.#tracked.size, this.#elements.size));
  }

  /** Names with tracked dynamic addresses (for tests of the bounds). */
  get trackedNames(): number {
    return this.#tracked.size;
  }

  #transaction(
    policy: SidecarPolicy,
    compiled: CompiledPolicy,
    dynamic: DynamicElement[],
    recreate: boolean,
    filter: boolean,
  ): string {
    return buildTableTransaction({
      filter,
      mark: this.#options.mark,
      uid: Deno.uid() ?? 0,
      upstreams: this.#options.upstreams,
      dnsPort: this.#options.dnsPort,
      defaultAction: policy.defaultAction,
      compiled,
      doh: this.#options.doh,
      dynamic,
      recreate,
    });
  }

  #locked<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(task, task);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  /** Distinct live addresses in the dynamic sets. */
  dynamicAddressCount(): number {
    const now = Date.now();
    const seen = new Set<string>();
    for (const addresses of this.#tracked.values()) {
      for (const [key, t] of addresses) if (t.expiresAt > now) seen.add(key);
    }
    return seen.size;
  }

  async status(): Promise<Record<string, unknown>> {
    const dropped = this.#nftTable && this.level === "dns+nft" ? await this.#nft.droppedPackets() : undefined;
    return {
      mode: "sidecar",
      enforcement: this.level,
      fallback_reason: this.fallbackReason,
      default_action: this.#compiled.policy.defaultAction,
      rules: { ...this.#compiled.counts },
      dynamic_ips: this.dynamicAddressCount(),
      counters: {
        dns_queries: this.#proxy?.counters.dns_queries ?? 0,
        dns_denied: this.#proxy?.counters.dns_denied ?? 0,
        nft_dropped: dropped ?? 0,
        policy_updates: this.policyUpdates,
      },
      started: this.started.toISOString(),
    };
  }

  /**
   * Closes the proxy and removes the table and redirect rules. Idempotent. `keepEnforcement` (exit
   * on an error) leaves them in place: the namespace stays closed rather than open until the next
   * start replaces them. Removing them there would let an app that holds the API or DNS port (both
   * unprivileged ports) open its own egress by making every restart fail.
   */
  async stop({ keepEnforcement = false } = {}): Promise<void> {
    const { ops } = this.#options;
    this.#enforcementInstalled = false;
    this.#proxy?.close();
    if (keepEnforcement) {
      if (this.#nftTable || this.#iptables) {
        ops.warn(
          `enforcement left in place after the error (${
            this.#nftTable ? "nftables table inet egress" : "iptables DNS redirect"
          }); the next start replaces it`,
        );
      }
      this.#nftTable = false;
      this.#iptables = undefined;
      return;
    }
    if (this.#nftTable) {
      this.#nftTable = false;
      try {
        await this.#nft.deleteTable();
        ops.info("cleanup: removed nftables table inet egress");
      } catch (error) {
        ops.error(`Cannot remove nftables table inet egress: ${(error as Error).message}`);
      }
    }
    if (this.#iptables) {
      await this.#iptables.remove();
      this.#iptables = undefined;
      ops.info("cleanup: removed iptables DNS redirect rules");
    }
  }
}
