// The nftables table `inet egress` (sidecar.md §3): transaction text generation (pure functions)
// and a small runner around `nft -f -`. Every change is one transaction that touches only this
// table; nothing outside it is read or written.

import { type AddressRange, type Family, formatAddress, formatRange, mergeRanges } from "./address.ts";
import { parseAddressTarget } from "./address.ts";
import type { CompiledPolicy, KeyShape, SidecarAction, SidecarProtocol } from "./policy.ts";

export const TABLE = "inet egress";
export const FILTER_CHAIN = "output";
export const NAT_CHAIN = "dns_redirect";
export const DROP_COUNTER = "dropped";
export const MIN_DYNAMIC_TIMEOUT = 60;
export const MAX_DYNAMIC_TIMEOUT = 360;

const SHAPES: readonly KeyShape[] = ["addr", "proto", "port"];
const FAMILIES: readonly Family[] = [4, 6];

/** One element of a dynamic (timeout) set. */
export type DynamicElement = {
  family: Family;
  shape: KeyShape;
  address: string;
  protocol?: SidecarProtocol;
  port?: number;
  timeoutSeconds: number;
};

export type TableSpec = {
  /** false at level `dns`: only the DNS redirect chain */
  filter: boolean;
  mark: number;
  /**
   * The proxy's uid and upstreams: the mark exemption holds only for packets of that uid to an
   * upstream's port (UDP), because CAP_NET_RAW alone is enough to set SO_MARK (Linux ≥ 5.17).
   */
  uid: number;
  upstreams: readonly { address: string; port: number }[];
  dnsPort: number;
  defaultAction: SidecarAction;
  compiled: CompiledPolicy;
  doh: readonly AddressRange[];
  dynamic: readonly DynamicElement[];
  /** delete and recreate the table (startup) rather than flush it (keeps the drop counter) */
  recreate: boolean;
};

/** Element timeout from an answer TTL: clamped to 60..360 s. */
export function clampTtl(ttl: number): number {
  if (!Number.isFinite(ttl)) return MIN_DYNAMIC_TIMEOUT;
  return Math.min(MAX_DYNAMIC_TIMEOUT, Math.max(MIN_DYNAMIC_TIMEOUT, Math.floor(ttl)));
}

export function setName(kind: "allow" | "deny" | "dyn", family: Family, shape: KeyShape): string {
  return `${kind}${family}_${shape}`;
}

function setType(family: Family, shape: KeyShape): string {
  const address = family === 4 ? "ipv4_addr" : "ipv6_addr";
  return shape === "addr"
    ? address
    : shape === "proto"
    ? `${address} . inet_proto`
    : `${address} . inet_proto . inet_service`;
}

function matchExpression(family: Family, shape: KeyShape): string {
  const address = family === 4 ? "ip daddr" : "ip6 daddr";
  return shape === "addr"
    ? address
    : shape === "proto"
    ? `${address} . meta l4proto`
    : `${address} . meta l4proto . th dport`;
}

function hex(mark: number): string {
  return `0x${mark.toString(16)}`;
}

/** `address . port` elements of the upstream set of one family. */
export function upstreamElements(upstreams: TableSpec["upstreams"], family: Family): string[] {
  const out = new Set<string>();
  for (const upstream of upstreams) {
    const range = parseAddressTarget(upstream.address);
    if (range?.family === family) out.add(`${formatAddress(family, range.first)} . ${upstream.port}`);
  }
  return [...out];
}

/** Static elements of one (action, family, shape) set, with overlapping ranges merged per key. */
export function staticElements(
  compiled: CompiledPolicy,
  action: SidecarAction,
  family: Family,
  shape: KeyShape,
): string[] {
  const groups = new Map<string, AddressRange[]>();
  for (const entry of compiled.entries) {
    if (entry.entry.action !== action || entry.shape !== shape || entry.range?.family !== family) continue;
    const suffixes = shape === "addr"
      ? [""]
      : shape === "proto"
      ? entry.protocols.map((p) => ` . ${p}`)
      : entry.protocols.flatMap((p) => entry.ports.map((port) => ` . ${p} . ${port}`));
    for (const suffix of suffixes) {
      const list = groups.get(suffix) ?? [];
      list.push(entry.range);
      groups.set(suffix, list);
    }
  }
  const out: string[] = [];
  for (const [suffix, ranges] of groups) {
    for (const range of mergeRanges(ranges)) out.push(`${formatRange(range)}${suffix}`);
  }
  return out;
}

function elementText(element: DynamicElement, withTimeout: boolean): string {
  let key = element.address;
  if (element.shape !== "addr") key += ` . ${element.protocol}`;
  if (element.shape === "port") key += ` . ${element.port}`;
  return withTimeout ? `${key} timeout ${element.timeoutSeconds}s` : key;
}

function addElements(lines: string[], set: string, elements: readonly string[]): void {
  // Chunks keep single lines short; nft parses them within the same transaction.
  for (let i = 0; i < elements.length; i += 256) {
    lines.push(`add element ${TABLE} ${set} { ${elements.slice(i, i + 256).join(", ")} }`);
  }
}

/** The whole table as one `nft -f` transaction. */
export function buildTableTransaction(spec: TableSpec): string {
  const lines: string[] = [`add table ${TABLE}`];
  lines.push(spec.recreate ? `delete table ${TABLE}` : `flush table ${TABLE}`);
  if (spec.recreate) lines.push(`add table ${TABLE}`);
  const mark = hex(spec.mark);
  const proxy = `meta mark ${mark} meta skuid ${spec.uid}`;

  // DNS redirect (§1.4): the proxy's own upstream queries carry the mark and pass unchanged.
  // Priority -110 runs before iptables' nat OUTPUT (-100), e.g. Docker's DNAT of 127.0.0.11:53,
  // which would otherwise move app queries off port 53 before this chain sees them.
  lines.push(`add chain ${TABLE} ${NAT_CHAIN} { type nat hook output priority -110; policy accept; }`);
  lines.push(`add rule ${TABLE} ${NAT_CHAIN} ${proxy} return`);
  lines.push(`add rule ${TABLE} ${NAT_CHAIN} udp dport 53 redirect to :${spec.dnsPort}`);
  lines.push(`add rule ${TABLE} ${NAT_CHAIN} tcp dport 53 redirect to :${spec.dnsPort}`);
  if (!spec.filter) return lines.join("\n") + "\n";

  lines.push(`add counter ${TABLE} ${DROP_COUNTER}`);
  for (const family of FAMILIES) {
    lines.push(`add set ${TABLE} doh${family} { type ${setType(family, "addr")}; flags interval; }`);
    lines.push(`add set ${TABLE} upstream${family} { type ${setType(family, "addr")} . inet_service; }`);
    for (const shape of SHAPES) {
      for (const kind of ["allow", "deny"] as const) {
        lines.push(
          `add set ${TABLE} ${setName(kind, family, shape)} { type ${
            setType(family, shape)
          }; flags interval; }`,
        );
      }
      lines.push(
        `add set ${TABLE} ${setName("dyn", family, shape)} { type ${
          setType(family, shape)
        }; flags timeout; }`,
      );
    }
  }
  if (!spec.recreate) {
    // `flush table` empties chains only; set elements (static and dynamic) are flushed one by one.
    for (const family of FAMILIES) {
      lines.push(`flush set ${TABLE} doh${family}`, `flush set ${TABLE} upstream${family}`);
      for (const shape of SHAPES) {
        for (const kind of ["allow", "deny", "dyn"] as const) {
          lines.push(`flush set ${TABLE} ${setName(kind, family, shape)}`);
        }
      }
    }
  }
  const policy = spec.defaultAction === "allow" ? "accept" : "drop";
  const chain = `${TABLE} ${FILTER_CHAIN}`;
  lines.push(`add chain ${chain} { type filter hook output priority filter; policy ${policy}; }`);
  const drop = `counter name "${DROP_COUNTER}" drop`;
  lines.push(
    // Only forged packets go through loopback with a source that is no local address (raw sockets,
    // IP_TRANSPARENT with CAP_NET_RAW): e.g. a fake upstream answer to the proxy's query socket,
    // which would put addresses of the app's choosing into the dynamic sets.
    `add rule ${chain} oif lo fib saddr type != local ${drop}`,
    `add rule ${chain} oif lo accept`,
    // `oif` is the route chosen before the DNS redirect: redirected queries show up here with the
    // outside interface but a loopback destination.
    `add rule ${chain} ip daddr 127.0.0.0/8 accept`,
    `add rule ${chain} ip6 daddr ::1 accept`,
    `add rule ${chain} ct state established,related accept`,
    `add rule ${chain} ${proxy} ip daddr . udp dport @upstream4 accept`,
    `add rule ${chain} ${proxy} ip6 daddr . udp dport @upstream6 accept`,
    `add rule ${chain} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept`,
    `add rule ${chain} meta l4proto { tcp, udp } th dport 853 ${drop}`,
    `add rule ${chain} meta l4proto { tcp, udp } th dport 443 ip daddr @doh4 ${drop}`,
    `add rule ${chain} meta l4proto { tcp, udp } th dport 443 ip6 daddr @doh6 ${drop}`,
  );
  for (const family of FAMILIES) {
    for (const shape of SHAPES) {
      lines.push(
        `add rule ${chain} ${matchExpression(family, shape)} @${setName("deny", family, shape)} ${drop}`,
      );
    }
  }
  for (const kind of ["allow", "dyn"] as const) {
    for (const family of FAMILIES) {
      for (const shape of SHAPES) {
        lines.push(
          `add rule ${chain} ${matchExpression(family, shape)} @${setName(kind, family, shape)} accept`,
        );
      }
    }
  }
  lines.push(`add rule ${chain} ${spec.defaultAction === "allow" ? "accept" : drop}`);

  for (const family of FAMILIES) {
    addElements(lines, `upstream${family}`, upstreamElements(spec.upstreams, family));
    addElements(
      lines,
      `doh${family}`,
      mergeRanges(spec.doh.filter((r) => r.family === family)).map(formatRange),
    );
    for (const shape of SHAPES) {
      for (const kind of ["allow", "deny"] as const) {
        addElements(lines, setName(kind, family, shape), staticElements(spec.compiled, kind, family, shape));
      }
    }
  }
  appendDynamic(lines, spec.dynamic, false);
  return lines.join("\n") + "\n";
}

function appendDynamic(lines: string[], elements: readonly DynamicElement[], refresh: boolean): void {
  const bySet = new Map<string, DynamicElement[]>();
  for (const element of elements) {
    const name = setName("dyn", element.family, element.shape);
    const list = bySet.get(name) ?? [];
    list.push(element);
    bySet.set(name, list);
  }
  for (const [set, list] of bySet) {
    if (refresh) {
      // `add` of an existing element keeps its old timeout: make sure it exists, remove it, add it
      // again with the new timeout — in one transaction, so the address is never missing.
      addElements(lines, set, list.map((e) => elementText(e, true)));
      for (let i = 0; i < list.length; i += 256) {
        lines.push(
          `delete element ${TABLE} ${set} { ${
            list.slice(i, i + 256).map((e) => elementText(e, false)).join(", ")
          } }`,
        );
      }
    }
    addElements(lines, set, list.map((e) => elementText(e, true)));
  }
}

/**
 * Adds new dynamic elements and refreshes the timeout of existing ones (`refreshed`), in one
 * transaction. Empty string when there is nothing to do. A plain `add` is much cheaper than the
 * add/delete/add of a refresh (≈ 3.5 vs 16 ms here), so callers say which elements may exist.
 */
export function buildDynamicUpdate(
  added: readonly DynamicElement[],
  refreshed: readonly DynamicElement[] = [],
): string {
  if (added.length === 0 && refreshed.length === 0) return "";
  const lines: string[] = [];
  appendDynamic(lines, dedupe(refreshed), true);
  appendDynamic(lines, dedupe(added), false);
  return lines.join("\n") + "\n";
}

/** Identity of a dynamic element (set and key, without timeout). */
export function dynamicKey(element: DynamicElement): string {
  return `${setName("dyn", element.family, element.shape)} ${elementText(element, false)}`;
}

function dedupe(elements: readonly DynamicElement[]): DynamicElement[] {
  const seen = new Map<string, DynamicElement>();
  for (const element of elements) {
    const key = dynamicKey(element);
    const previous = seen.get(key);
    if (previous === undefined || previous.timeoutSeconds < element.timeoutSeconds) seen.set(key, element);
  }
  return [...seen.values()];
}

/** Dynamic elements for one answer address of a name, from the allow entries that grant it. */
export function dynamicElementsFor(
  grants: CompiledPolicy["entries"],
  family: Family,
  value: bigint,
  timeoutSeconds: number,
): DynamicElement[] {
  const address = formatAddress(family, value);
  const out: DynamicElement[] = [];
  for (const grant of grants) {
    if (grant.shape === "addr") out.push({ family, shape: "addr", address, timeoutSeconds });
    else if (grant.shape === "proto") {
      for (const protocol of grant.protocols) {
        out.push({ family, shape: "proto", address, protocol, timeoutSeconds });
      }
    } else {
      for (const protocol of grant.protocols) {
        for (const port of grant.ports) {
          out.push({ family, shape: "port", address, protocol, port, timeoutSeconds });
        }
      }
    }
  }
  return out;
}

/** `packets N` of the drop counter in `nft list counter` output. */
export function parseCounterPackets(listing: string): number | undefined {
  const match = /packets (\d+)/.exec(listing);
  return match ? Number(match[1]) : undefined;
}

// ------------------------------------------------------------------ runner

export class NftError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NftError";
  }
}

/** Runs `nft` (the binary given by --nft). Calls are serialised so transactions never interleave. */
export class Nft {
  #tail: Promise<unknown> = Promise.resolve();
  constructor(readonly path: string) {}

  /** Applies one transaction (`nft -f -`); throws NftError with nft's first error line. */
  apply(text: string): Promise<void> {
    return this.#serial(() => this.#run(["-f", "-"], text).then(() => undefined));
  }

  /** `nft list …` output. */
  list(what: string): Promise<string> {
    return this.#serial(() => this.#run(["list", ...what.split(" ")]));
  }

  async droppedPackets(): Promise<number | undefined> {
    try {
      return parseCounterPackets(await this.list(`counter ${TABLE} ${DROP_COUNTER}`));
    } catch {
      return undefined;
    }
  }

  /** Removes the table if it exists. */
  deleteTable(): Promise<void> {
    return this.apply(`add table ${TABLE}\ndelete table ${TABLE}\n`);
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(task, task);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #run(args: string[], stdin?: string): Promise<string> {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(this.path, {
        args,
        stdin: stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound ? "not found" : (error as Error).message;
      throw new NftError(`Cannot run ${this.path}: ${reason}`);
    }
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
    }
    const result = await child.output();
    const decoder = new TextDecoder();
    if (!result.success) {
      const stderr = decoder.decode(result.stderr).trim();
      const first = stderr.split("\n").find((line) => /Error/.test(line)) ?? stderr.split("\n")[0] ?? "";
      throw new NftError(`nft ${args[0]} failed (exit ${result.code}): ${first || "no message"}`);
    }
    return decoder.decode(result.stdout);
  }
}
