// `egress sidecar` (sidecar.md §6): DNS + nftables egress filtering for a pod or sandbox network
// namespace, with an HTTP policy API.

import { CliError, parseArgs, UsageError } from "./args.ts";
import { ConnectionLog } from "../log/connection_log.ts";
import { OperationalLog } from "../log/operational_log.ts";
import { type AddressRange, parseAddressTarget } from "../sidecar/address.ts";
import { startApi } from "../sidecar/api.ts";
import { parsePolicyBody, type SidecarPolicy } from "../sidecar/policy.ts";
import { type EnforcementLevel, hostNetworkReason, Sidecar, SidecarError } from "../sidecar/sidecar.ts";
import { parseUpstream, resolvConfNameservers, type Upstream } from "../sidecar/upstream.ts";

export const SIDECAR_USAGE = `Usage: egress sidecar [options]

Filters the egress of this network namespace (a pod or sandbox) by DNS name and destination
address. Only the sidecar needs CAP_NET_ADMIN.

Options:
  --policy FILE|-          policy language file (allow rules; - reads stdin)
  --policy-json FILE       JSON policy {"defaultAction", "egress": [...]}
                           (else EGRESS_POLICY / EGRESS_POLICY_JSON; none: deny all)
  --mode dns|dns+nft       enforcement level (default dns+nft)
  --require-nft            exit instead of falling back to level dns
  --dns-port PORT          DNS proxy port on 127.0.0.1 (default 15053)
  --upstream IP[:PORT]     upstream resolver, repeatable (default: /etc/resolv.conf)
  --mark MARK              socket mark of the proxy's own queries (default 0x1)
  --doh-blocklist FILE     IPs/CIDRs of DoH servers, one per line (TCP/UDP 443 dropped)
  --api ADDR:PORT          policy API (default 0.0.0.0:18080)
  --api-token-file FILE    bearer token of the API (else EGRESS_API_TOKEN)
  --log FILE               connection log (default stdout)
  --ready-file PATH        created once the sidecar is ready
  --nft PATH               nft binary (default nft)
  --allow-host-network     run even where the namespace looks like the host's (VM sandboxes
                           such as Kata or Firecracker have device-backed interfaces)
  --healthcheck            GET /healthz of a running sidecar, exit 0 (ok) or 1
  -h, --help               this help`;

const FLAGS = {
  policy: { kind: "string" },
  "policy-json": { kind: "string" },
  mode: { kind: "string" },
  "require-nft": { kind: "boolean" },
  "dns-port": { kind: "string" },
  upstream: { kind: "strings" },
  mark: { kind: "string" },
  "doh-blocklist": { kind: "string" },
  api: { kind: "string" },
  "api-token-file": { kind: "string" },
  log: { kind: "string" },
  "ready-file": { kind: "string" },
  nft: { kind: "string" },
  healthcheck: { kind: "boolean" },
  "allow-host-network": { kind: "boolean" },
  help: { kind: "boolean", short: "h" },
} as const;

function parsePort(text: string, what: string): number {
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 65535) {
    throw new UsageError(`${what} "${text}" is not a port 1..65535`);
  }
  return Number(text);
}

/** `ADDR:PORT` or `[IPv6]:PORT`. */
export function parseListenAddress(text: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d+)$/.exec(text);
  if (!match) throw new UsageError(`--api "${text}" must be ADDR:PORT`);
  return { hostname: match[1] ?? match[2], port: parsePort(match[3], "--api port") };
}

function parseMark(text: string): number {
  const value = /^0x[0-9a-fA-F]{1,8}$/.test(text)
    ? parseInt(text, 16)
    : /^[1-9][0-9]*$/.test(text)
    ? Number(text)
    : NaN;
  if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) {
    throw new UsageError(`--mark "${text}" must be a non-zero 32-bit number (e.g. 0x1)`);
  }
  return value;
}

async function readText(path: string, what: string): Promise<string> {
  try {
    if (path === "-") return await new Response(Deno.stdin.readable).text();
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new CliError(`Cannot read ${what} ${path}: ${(error as Error).message}`, 2);
  }
}

/** DoH blocklist: IPs/CIDRs one per line; `#` comments and blank lines ignored. */
export function parseDohBlocklist(text: string, path: string): AddressRange[] {
  const out: AddressRange[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/#.*$/, "").trim();
    if (line === "") return;
    const range = parseAddressTarget(line);
    if (range === undefined) {
      throw new CliError(
        `Cannot read DoH blocklist ${path}: line ${index + 1}: "${line}" is not an IP or CIDR`,
        2,
      );
    }
    out.push(range);
  });
  return out;
}

function formatIssues(source: string, issues: { line: number; column: number; message: string }[]): string {
  return issues.slice(0, 20).map((i) => `${source}:${i.line}:${i.column}: ${i.message}`).join("\n");
}

async function loadPolicy(
  flags: { policy?: string; policyJson?: string },
): Promise<{ policy: SidecarPolicy; source: string }> {
  if (flags.policy !== undefined && flags.policyJson !== undefined) {
    throw new UsageError("give either --policy or --policy-json, not both");
  }
  let text: string, format: "json" | "text", source: string;
  if (flags.policy !== undefined) {
    [text, format, source] = [await readText(flags.policy, "policy"), "text", flags.policy];
  } else if (flags.policyJson !== undefined) {
    [text, format, source] = [await readText(flags.policyJson, "policy"), "json", flags.policyJson];
  } else if (Deno.env.get("EGRESS_POLICY") !== undefined) {
    [text, format, source] = [Deno.env.get("EGRESS_POLICY")!, "text", "EGRESS_POLICY"];
  } else if (Deno.env.get("EGRESS_POLICY_JSON") !== undefined) {
    [text, format, source] = [Deno.env.get("EGRESS_POLICY_JSON")!, "json", "EGRESS_POLICY_JSON"];
  } else {
    return { policy: { defaultAction: "deny", egress: [] }, source: "none (deny all)" };
  }
  const parsed = parsePolicyBody(text, format);
  if (!parsed.ok) {
    throw new CliError(`Cannot load policy ${source}:\n${formatIssues(source, parsed.errors)}`, 1);
  }
  return { policy: parsed.policy, source };
}

async function healthcheck(api: { hostname: string; port: number }): Promise<number> {
  const host = api.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : api.hostname === "::"
    ? "[::1]"
    : api.hostname.includes(":")
    ? `[${api.hostname}]`
    : api.hostname;
  try {
    const response = await fetch(`http://${host}:${api.port}/healthz`, { signal: AbortSignal.timeout(3000) });
    await response.body?.cancel();
    return response.status === 200 ? 0 : 1;
  } catch {
    return 1;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

export async function runSidecar(args: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(args, FLAGS);
  if (flags.help) {
    console.log(SIDECAR_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const api = parseListenAddress(flags.api ?? "0.0.0.0:18080");
  if (flags.healthcheck) return await healthcheck(api);

  const mode = (flags.mode ?? "dns+nft") as EnforcementLevel;
  if (mode !== "dns" && mode !== "dns+nft") {
    throw new UsageError(`--mode "${flags.mode}" must be dns or dns+nft`);
  }
  const dnsPort = parsePort(flags["dns-port"] ?? "15053", "--dns-port");
  const mark = parseMark(flags.mark ?? "0x1");
  let upstreams: Upstream[] = flags.upstream.map((text) => {
    const upstream = parseUpstream(text);
    if (upstream === undefined) throw new UsageError(`--upstream "${text}" must be IP[:PORT]`);
    return upstream;
  });
  if (upstreams.length === 0) {
    // Read before the redirect exists (it does not change the file, but the order is the contract).
    upstreams = resolvConfNameservers(await readText("/etc/resolv.conf", "resolver configuration"));
    if (upstreams.length === 0) {
      throw new CliError(
        "Cannot find an upstream resolver: /etc/resolv.conf has no nameserver; use --upstream",
        2,
      );
    }
  }
  const doh = flags["doh-blocklist"] === undefined
    ? []
    : parseDohBlocklist(await readText(flags["doh-blocklist"], "DoH blocklist"), flags["doh-blocklist"]);
  let token: string | undefined;
  if (flags["api-token-file"] !== undefined) {
    token = (await readText(flags["api-token-file"], "API token file")).trim();
    if (token === "") {
      throw new CliError(`Cannot use API token file ${flags["api-token-file"]}: it is empty`, 2);
    }
  } else {
    const fromEnv = Deno.env.get("EGRESS_API_TOKEN")?.trim();
    token = fromEnv ? fromEnv : undefined;
  }
  const initial = await loadPolicy({ policy: flags.policy, policyJson: flags["policy-json"] });

  // 1. refuse the host network before touching anything
  const refusal = hostNetworkReason(
    { podIp: Deno.env.get("EGRESS_POD_IP"), hostIp: Deno.env.get("EGRESS_HOST_IP") },
    (path) => {
      try {
        return Deno.readTextFileSync(path);
      } catch {
        return undefined;
      }
    },
    exists,
  );
  if (refusal !== undefined && !flags["allow-host-network"]) {
    throw new CliError(
      `refusing to run in the host network namespace: ${refusal} (--allow-host-network overrides)`,
      1,
    );
  }

  const ops = new OperationalLog({});
  if (refusal !== undefined) ops.warn(`host network check overridden by --allow-host-network: ${refusal}`);
  const log = await ConnectionLog.open({ path: flags.log ?? "-", reporter: ops });
  const sidecar = new Sidecar({
    mode,
    requireNft: flags["require-nft"],
    dnsPort,
    upstreams,
    mark,
    doh,
    nftPath: flags.nft ?? "nft",
    log,
    ops,
  });

  let stopRequested: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (stopRequested = resolve));
  // Only a requested stop removes the enforcement; an exit on an error leaves it (fail closed).
  let cleanExit = false;
  const onSignal = () => stopRequested();
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  let server: Awaited<ReturnType<typeof startApi>> | undefined;
  try {
    try {
      await sidecar.start();
    } catch (error) {
      if (error instanceof SidecarError) throw new CliError(error.message, 1);
      throw error;
    }
    try {
      await sidecar.setPolicy(initial.policy, { countUpdate: false });
    } catch (error) {
      throw new CliError(`Cannot apply the policy from ${initial.source}: ${(error as Error).message}`, 1);
    }
    try {
      server = await startApi(api.hostname, api.port, { target: sidecar, token, warn: (m) => ops.warn(m) });
    } catch (error) {
      throw new CliError(
        `Cannot start the API on ${flags.api ?? "0.0.0.0:18080"}: ${(error as Error).message}`,
        1,
      );
    }
    if (token === undefined) ops.warn("no API token configured: /policy and /status answer 403");
    if (flags["ready-file"] !== undefined) {
      try {
        await Deno.writeTextFile(flags["ready-file"], `${Deno.pid}\n`);
      } catch (error) {
        throw new CliError(`Cannot create ready file ${flags["ready-file"]}: ${(error as Error).message}`, 1);
      }
    }
    ops.info(`sidecar ready: policy ${initial.source}, API ${server.addr.hostname}:${server.addr.port}`);
    await stopped;
    ops.info("SIGTERM: stopping");
    cleanExit = true;
    return 0;
  } finally {
    Deno.removeSignalListener("SIGTERM", onSignal);
    Deno.removeSignalListener("SIGINT", onSignal);
    await server?.shutdown().catch(() => {});
    await sidecar.stop({ keepEnforcement: !cleanExit });
    if (flags["ready-file"] !== undefined) await Deno.remove(flags["ready-file"]).catch(() => {});
    await log.close();
    ops.close();
  }
}
