// `egress start` flags (cli.md) → DaemonConfig. Pure apart from the environment lookup passed in.

import { parseArgs, UsageError } from "../cli/args.ts";
import { PACKAGE_CHECK_ENV, packageCheckBaseUrl } from "../packages/reputation.ts";

export type DnsUpstream = { ip: string; port: number };

export type DaemonConfig = {
  /** policy file path, "-" for stdin, undefined for the empty policy */
  policyPath?: string;
  audit: boolean;
  logPath: string;
  /** size cap of the connection log before rotation to `<log>.1`; 0 = no cap */
  logMaxBytes: number;
  /** operational log file (beside the connection log) */
  operationalLogPath: string;
  /** where the cgroup hooks attach; undefined: the cgroup2 root */
  cgroup?: string;
  repository?: string;
  controlSocket: string;
  stateDir: string;
  readyFile?: string;
  proxyPort: number;
  dnsPort: number;
  queueNum: number;
  upstreamCaFiles: string[];
  dnsUpstreams: DnsUpstream[];
  /** --package-check (extras.md §1) */
  packageCheck: boolean;
  /** --package-check-url (else EGRESS_PACKAGE_CHECK_URL, read at start) */
  packageCheckUrl?: string;
  /** GitHub runner integration (runner.md) */
  runner: boolean;
  /** runner mode: keep sudo and log its use */
  allowSudo: boolean;
  /** runner mode: install the runc wrapper */
  containerCerts: boolean;
};

export const START_USAGE = `Usage: egress start [options]

Runs the egress daemon in the foreground (root): intercepts the outgoing traffic of the processes
in --cgroup in this network namespace and judges it against the policy.

Options:
  --policy FILE|-          policy text (- = stdin; default: the empty policy, which denies all)
  --audit                  log, never block
  --log FILE               connection log (default /var/log/egress/connections.jsonl)
  --log-max-size BYTES     rotate the log to FILE.1 past this size (K/M/G suffix; default 512M; 0 = never)
  --cgroup PATH            cgroup the hooks attach to (default: the cgroup2 root)
  --repo OWNER/REPO        placeholder values (default $GITHUB_REPOSITORY)
  --control-socket PATH    control socket (default /run/egress.sock)
  --state-dir DIR          CA key, policy copy (default /run/egress)
  --ready-file PATH        created once interception is active
  --proxy-port N           transparent proxy port (default 15080)
  --dns-port N             DNS proxy port (default 15053)
  --queue-num N            NFQUEUE number (default 15)
  --upstream-ca FILE       extra CA certificates for upstream TLS (repeatable)
  --dns-upstream IP[:PORT] send allowed DNS queries here (repeatable)
  --runner                 GitHub runner integration: built-in rules, trusted step context, self-check,
                           sudo / user-namespace / CA / runc hardening (runner.md)
  --allow-sudo             runner mode: keep sudo, log its use as sudo events
  --no-container-certs     runner mode: no runc wrapper (containers do not trust the egress CA)

Stops on SIGINT, SIGTERM or "egress stop"; reloads the policy on SIGHUP or "reload".
Exit: 0 stopped cleanly, 1 startup failed or invalid policy, 2 usage error.`;

const FLAGS = {
  help: { kind: "boolean", short: "h" },
  policy: { kind: "string" },
  audit: { kind: "boolean" },
  log: { kind: "string" },
  "log-max-size": { kind: "string" },
  cgroup: { kind: "string" },
  repo: { kind: "string" },
  "control-socket": { kind: "string" },
  "state-dir": { kind: "string" },
  "ready-file": { kind: "string" },
  "proxy-port": { kind: "string" },
  "dns-port": { kind: "string" },
  "queue-num": { kind: "string" },
  "upstream-ca": { kind: "strings" },
  "dns-upstream": { kind: "strings" },
  runner: { kind: "boolean" },
  "allow-sudo": { kind: "boolean" },
  "package-check": { kind: "boolean" },
  "package-check-url": { kind: "string" },
  "no-container-certs": { kind: "boolean" },
} as const;

/** Default size cap of the connection log before it rotates to `<log>.1` (one older file is kept). */
export const DEFAULT_LOG_MAX_BYTES = 512 * 1024 * 1024;

/** `--log-max-size`: bytes with an optional K/M/G suffix (powers of 1024); 0 turns rotation off. */
export function parseLogMaxSize(text: string | undefined): number {
  if (text === undefined) return DEFAULT_LOG_MAX_BYTES;
  const match = /^(\d+)([KMG]?)$/i.exec(text);
  if (!match) {
    throw new UsageError(
      `--log-max-size must be bytes with an optional K, M or G suffix, got ${JSON.stringify(text)}`,
    );
  }
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2].toUpperCase() as "" | "K" | "M" | "G"];
  const bytes = Number(match[1]) * unit;
  if (bytes !== 0 && bytes < 64 * 1024) {
    throw new UsageError(`--log-max-size must be 0 (no cap) or at least 64K, got ${JSON.stringify(text)}`);
  }
  if (!Number.isSafeInteger(bytes)) {
    throw new UsageError(`--log-max-size is too large: ${JSON.stringify(text)}`);
  }
  return bytes;
}

function integer(flag: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`--${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function parseDnsUpstream(text: string): DnsUpstream {
  const match = /^([^:]+)(?::(\d+))?$/.exec(text);
  if (!match || !IPV4.test(match[1])) {
    throw new UsageError(`--dns-upstream must be IPv4[:PORT], got ${JSON.stringify(text)}`);
  }
  const port = match[2] === undefined ? 53 : Number(match[2]);
  if (port < 1 || port > 65535) {
    throw new UsageError(`--dns-upstream port out of range in ${JSON.stringify(text)}`);
  }
  return { ip: match[1], port };
}

/** The reputation API base (flag, else EGRESS_PACKAGE_CHECK_URL, else the public service); exit 2 if bad. */
function packageCheckUrl(flag: string | undefined, env: (key: string) => string | undefined): string {
  try {
    return packageCheckBaseUrl(flag, env(PACKAGE_CHECK_ENV));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Returns the config, or "help" when -h was given. Throws UsageError / CliError(2). */
export function parseStartArgs(
  argv: readonly string[],
  env: (key: string) => string | undefined = () => undefined,
): DaemonConfig | "help" {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) return "help";
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const logPath = flags.log ?? "/var/log/egress/connections.jsonl";
  if (logPath === "" || logPath === "-") throw new UsageError("--log needs a file path");
  const slash = logPath.lastIndexOf("/");
  const logDir = slash > 0 ? logPath.slice(0, slash) : slash === 0 ? "" : ".";
  const proxyPort = integer("proxy-port", flags["proxy-port"], 15080, 1, 65535);
  const dnsPort = integer("dns-port", flags["dns-port"], 15053, 1, 65535);
  if (proxyPort === dnsPort) throw new UsageError("--proxy-port and --dns-port must differ");
  if (!flags.runner && (flags["allow-sudo"] || flags["no-container-certs"])) {
    throw new UsageError(`--${flags["allow-sudo"] ? "allow-sudo" : "no-container-certs"} needs --runner`);
  }
  const repository = flags.repo ?? env("GITHUB_REPOSITORY");
  if (repository !== undefined && repository !== "" && !/^[^/\s]+\/[^/\s]+$/.test(repository)) {
    throw new UsageError(`--repo must be OWNER/REPO, got ${JSON.stringify(repository)}`);
  }
  return {
    policyPath: flags.policy,
    audit: flags.audit,
    logPath,
    logMaxBytes: parseLogMaxSize(flags["log-max-size"]),
    operationalLogPath: `${logDir}/egress.log`,
    cgroup: flags.cgroup,
    repository: repository || undefined,
    controlSocket: flags["control-socket"] ?? "/run/egress.sock",
    stateDir: (flags["state-dir"] ?? "/run/egress").replace(/(.)\/+$/, "$1"),
    readyFile: flags["ready-file"],
    proxyPort,
    dnsPort,
    queueNum: integer("queue-num", flags["queue-num"], 15, 0, 65535),
    upstreamCaFiles: flags["upstream-ca"],
    dnsUpstreams: flags["dns-upstream"].map(parseDnsUpstream),
    packageCheck: flags["package-check"],
    packageCheckUrl: packageCheckUrl(flags["package-check-url"], env),
    runner: flags.runner,
    allowSudo: flags["allow-sudo"],
    containerCerts: !flags["no-container-certs"],
  };
}

/** BPF pin instance name: stable per state dir, so a restart finds what a killed run pinned. */
export function instanceName(stateDir: string): string {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(stateDir)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  const base = stateDir.split("/").filter(Boolean).at(-1)?.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 24) ??
    "root";
  return `${base}-${hash.toString(16).padStart(8, "0")}`;
}
