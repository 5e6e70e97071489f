// Installs, verifies and removes the packet-steering rules of src/netfilter/rules.ts with the
// iptables tools, and edits conntrack entries when the UDP policy changes. Works on the network
// namespace of the calling process, or on `netnsPath` through nsenter (tests, tooling).
import { cgroup2MountFrom, resolveCgroupPath } from "../kernel/cgroup.ts";
import {
  buildSteeringRules,
  CHAIN_PREFIX,
  DEFAULT_MARKS,
  hex,
  jumpRule,
  renderTable,
  STEERING_TABLES,
  type SteeringConfig,
  type SteeringMarks,
  type SteeringTable,
  validateSteeringConfig,
} from "./rules.ts";
import { parseIptablesSave, ruleTarget, sameRule, type SavedTable } from "./save.ts";

export interface NetfilterOptions {
  /** Network namespace to work in (a /run/netns/NAME path); default: the caller's own. */
  netnsPath?: string;
  /** Receives one line per step (install, each jump and chain removed, conntrack edits). */
  log?: (message: string) => void;
  /** Where binaries are looked up, in order. */
  binDirs?: string[];
}

const DEFAULT_BIN_DIRS = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"];

/** Debian package that ships each tool, for the error when it is missing. */
const PACKAGES: Record<string, string> = {
  "iptables": "iptables",
  "iptables-save": "iptables",
  "iptables-restore": "iptables",
  "conntrack": "conntrack",
  "nsenter": "util-linux",
};

/** Seconds iptables waits for the xtables lock held by another tool (Docker, firewalld). */
const LOCK_WAIT_SECONDS = "10";

/** Absolute path of a tool; throws naming the Debian package when it is not installed. */
export function resolveBinary(name: string, dirs: string[] = DEFAULT_BIN_DIRS): string {
  for (const dir of dirs) {
    const path = `${dir}/${name}`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not in this directory.
    }
  }
  const packageName = PACKAGES[name] ?? name;
  throw new Error(
    `Cannot run ${name}: not found in ${dirs.join(", ")} (install the Debian package ${packageName})`,
  );
}

interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function runTool(
  name: string,
  args: string[],
  options: NetfilterOptions,
  stdin?: string,
): Promise<CommandResult> {
  const dirs = options.binDirs ?? DEFAULT_BIN_DIRS;
  let argv = [resolveBinary(name, dirs), ...args];
  if (options.netnsPath) argv = [resolveBinary("nsenter", dirs), `--net=${options.netnsPath}`, ...argv];
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { LC_ALL: "C" },
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(new TextEncoder().encode(stdin));
    } finally {
      await writer.close().catch(() => {});
    }
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}

async function saveTable(table: SteeringTable, options: NetfilterOptions): Promise<SavedTable> {
  const result = await runTool("iptables-save", ["-t", table], options);
  if (result.code !== 0) {
    throw new Error(`Cannot read the ${table} table (iptables-save): ${firstLine(result.stderr)}`);
  }
  // A table that does not exist yet prints as its empty built-in chains.
  return parseIptablesSave(result.stdout).find((saved) => saved.name === table) ??
    { name: table, chains: [], rules: [] };
}

/** "Not found" answers of iptables: the thing to delete is already gone, which is what we want. */
const NOT_FOUND = /does a matching rule exist|no chain\/target\/match by that name|does not exist|not found/i;

export interface RemovalReport {
  jumps: number;
  chains: number;
}

/**
 * Removes every jump into an EGRESS-* chain, then flushes and deletes the EGRESS-* chains, in
 * mangle, nat and filter; nothing else is touched. Each table is first removed in one atomic
 * `iptables-restore --noflush` (-D, -F, -X lines built from iptables-save); when that fails (a rule
 * vanished meanwhile) the same steps run one by one, where "not found" is not an error. Idempotent.
 */
export async function removeSteering(options: NetfilterOptions = {}): Promise<RemovalReport> {
  const log = options.log ?? (() => {});
  const report: RemovalReport = { jumps: 0, chains: 0 };
  const failures: string[] = [];
  for (const table of [...STEERING_TABLES].reverse()) {
    const saved = await saveTable(table, options);
    const ours = saved.chains.filter((chain) => chain.startsWith(CHAIN_PREFIX));
    const jumps = saved.rules.filter((rule) =>
      !rule.chain.startsWith(CHAIN_PREFIX) && (ruleTarget(rule) ?? "").startsWith(CHAIN_PREFIX)
    );
    if (ours.length === 0 && jumps.length === 0) continue;
    // Flush all before deleting any: one of our chains may still be referenced by another of ours.
    const steps = [
      ...jumps.map((rule) => ({
        args: ["-D", rule.chain, ...rule.tokens],
        line: `-D ${rule.chain} ${rule.spec}`,
        done: `removed jump ${table} ${rule.chain} -> ${ruleTarget(rule)} (${rule.spec})`,
        gone: `jump ${table} ${rule.chain} -> ${ruleTarget(rule)} already gone`,
        kind: "jump" as const,
      })),
      ...ours.map((chain) => ({
        args: ["-F", chain],
        line: `-F ${chain}`,
        done: "",
        gone: "",
        kind: "flush" as const,
      })),
      ...ours.map((chain) => ({
        args: ["-X", chain],
        line: `-X ${chain}`,
        done: `flushed and deleted chain ${table} ${chain}`,
        gone: `chain ${table} ${chain} already gone`,
        kind: "chain" as const,
      })),
    ];
    const text = [`*${table}`, ...steps.map((step) => step.line), "COMMIT", ""].join("\n");
    const atomic = await runTool("iptables-restore", ["-w", LOCK_WAIT_SECONDS, "--noflush"], options, text);
    if (atomic.code === 0) {
      for (const step of steps) {
        if (step.kind === "jump") report.jumps++;
        if (step.kind === "chain") report.chains++;
        if (step.done) log(step.done);
      }
      continue;
    }
    log(`atomic removal in ${table} failed (${firstLine(atomic.stderr)}): removing step by step`);
    for (const step of steps) {
      const result = await runTool("iptables", ["-w", LOCK_WAIT_SECONDS, "-t", table, ...step.args], options);
      if (result.code === 0) {
        if (step.kind === "jump") report.jumps++;
        if (step.kind === "chain") report.chains++;
        if (step.done) log(step.done);
      } else if (NOT_FOUND.test(result.stderr)) {
        if (step.gone) log(step.gone);
      } else {
        failures.push(`${step.line} in ${table}: ${firstLine(result.stderr)}`);
      }
    }
  }
  if (failures.length > 0) {
    throw new Error(`Cannot remove the packet-steering rules: ${failures.join("; ")}`);
  }
  return report;
}

export interface Leftover {
  table: SteeringTable;
  chain: string;
}

/** EGRESS-* chains present now (left by a daemon that did not clean up), table by table. */
export async function findLeftovers(options: NetfilterOptions = {}): Promise<Leftover[]> {
  const leftovers: Leftover[] = [];
  for (const table of STEERING_TABLES) {
    const saved = await saveTable(table, options);
    for (const chain of saved.chains) {
      if (chain.startsWith(CHAIN_PREFIX)) leftovers.push({ table, chain });
    }
  }
  return leftovers;
}

/** Drops the resolved-cgroup exemption when systemd-resolved's cgroup does not exist (xt_cgroup needs it). */
function withExistingCgroups(config: SteeringConfig, log: (message: string) => void): SteeringConfig {
  let mount: string | undefined;
  try {
    mount = cgroup2MountFrom(Deno.readTextFileSync("/proc/self/mountinfo"));
  } catch {
    mount = undefined;
  }
  if (!mount) {
    throw new Error("Cannot install the packet-steering rules: no cgroup2 mount in /proc/self/mountinfo");
  }
  const exists = (path: string) => {
    try {
      return Deno.statSync(resolveCgroupPath(path, mount).fsPath).isDirectory;
    } catch {
      return false;
    }
  };
  if (!exists(config.exemptCgroupPath)) {
    throw new Error(
      `Cannot install the packet-steering rules: the exempt cgroup ${config.exemptCgroupPath} does not exist ` +
        `under ${mount}`,
    );
  }
  if (config.resolvedCgroupPath && !exists(config.resolvedCgroupPath)) {
    log(`cgroup ${config.resolvedCgroupPath} does not exist: no systemd-resolved exemption`);
    return { ...config, resolvedCgroupPath: undefined };
  }
  return config;
}

/**
 * Installs the ruleset: removes whatever EGRESS-* state is there first, then feeds each table to
 * `iptables-restore --noflush` (one atomic commit per table). On any failure everything installed
 * so far is removed again and the error names the table. Returns the configuration actually used
 * (the resolved exemption is dropped when that cgroup does not exist), for verifySteering.
 */
export async function installSteering(
  input: SteeringConfig,
  options: NetfilterOptions = {},
): Promise<SteeringConfig> {
  const log = options.log ?? (() => {});
  validateSteeringConfig(input);
  const config = withExistingCgroups(input, log);
  const tables = buildSteeringRules(config);
  const leftovers = await findLeftovers(options);
  if (leftovers.length > 0) {
    log(`removing leftover chains: ${leftovers.map((left) => `${left.table} ${left.chain}`).join(", ")}`);
  }
  await removeSteering(options);
  for (const rules of tables) {
    const result = await runTool(
      "iptables-restore",
      ["-w", LOCK_WAIT_SECONDS, "--noflush"],
      options,
      renderTable(rules),
    );
    if (result.code !== 0) {
      const reason = result.stderr.trim().replace(/\s*\n\s*/g, "; ") || `exit code ${result.code}`;
      await removeSteering(options).catch((error) =>
        log(`cleanup after the failed install: ${error.message}`)
      );
      throw new Error(`Cannot install the packet-steering rules (table ${rules.table}): ${reason}`);
    }
    const chainCount = rules.chains.reduce((sum, chain) => sum + chain.rules.length, 0);
    log(
      `installed ${rules.table}: ${rules.chains.map((chain) => chain.name).join(", ")} (${chainCount} rules)`,
    );
  }
  return config;
}

export interface VerifyReport {
  ok: boolean;
  /** One sentence per difference from the expected ruleset. */
  problems: string[];
}

/**
 * Checks that each jump is the first rule of its built-in chain (and the only jump to our chain),
 * that our chains hold exactly the expected rules, and that no other EGRESS-* chain exists.
 */
export async function verifySteering(
  config: SteeringConfig,
  options: NetfilterOptions = {},
): Promise<VerifyReport> {
  const problems: string[] = [];
  for (const expected of buildSteeringRules(config)) {
    const saved = await saveTable(expected.table, options);
    const table = expected.table;
    for (const jump of expected.jumps) {
      const rules = saved.rules.filter((rule) => rule.chain === jump.from);
      const first = rules[0];
      if (!first || !sameRule(first.spec, jumpRule(jump))) {
        problems.push(
          `${table} ${jump.from}: first rule is ${
            first ? JSON.stringify(first.spec) : "missing"
          }, expected ` +
            JSON.stringify(jumpRule(jump)),
        );
      }
      const extra = rules.slice(1).filter((rule) => ruleTarget(rule) === jump.to).length;
      if (extra > 0) problems.push(`${table} ${jump.from}: ${extra} more jump(s) to ${jump.to}`);
    }
    for (const chain of expected.chains) {
      if (!saved.chains.includes(chain.name)) {
        problems.push(`${table} ${chain.name}: chain missing`);
        continue;
      }
      const actual = saved.rules.filter((rule) => rule.chain === chain.name).map((rule) => rule.spec);
      const length = Math.max(actual.length, chain.rules.length);
      for (let i = 0; i < length; i++) {
        if (actual[i] !== undefined && chain.rules[i] !== undefined && sameRule(actual[i], chain.rules[i])) {
          continue;
        }
        problems.push(
          `${table} ${chain.name} rule ${i + 1}: found ${JSON.stringify(actual[i] ?? null)}, expected ` +
            JSON.stringify(chain.rules[i] ?? null),
        );
      }
    }
    const known = new Set(expected.chains.map((chain) => chain.name));
    for (const chain of saved.chains) {
      if (chain.startsWith(CHAIN_PREFIX) && !known.has(chain)) {
        problems.push(`${table} ${chain}: unexpected chain`);
      }
    }
  }
  return { ok: problems.length === 0, problems };
}

/** "N flow entries have been deleted/updated." — conntrack exits 1 when N is 0. */
function conntrackCount(result: CommandResult, what: string): number {
  const match = /(\d+) flow entries have been/.exec(result.stderr + result.stdout);
  if (match) return Number(match[1]);
  if (result.code === 0) return 0;
  throw new Error(`Cannot ${what}: ${firstLine(result.stderr) || `conntrack exit code ${result.code}`}`);
}

/**
 * Deletes every UDP conntrack entry, so flows that began before the rules (or under an older
 * policy) are seen again as new: NAT and the queue only judge a flow's first packet.
 */
export async function flushUdpConntrack(options: NetfilterOptions = {}): Promise<number> {
  const result = await runTool("conntrack", ["-D", "-p", "udp"], options);
  const count = conntrackCount(result, "flush the UDP conntrack entries");
  (options.log ?? (() => {}))(`deleted ${count} UDP conntrack entries`);
  return count;
}

/**
 * Deletes the UDP conntrack entries that carry the allowed-flow bit, so the next packet of each such
 * flow starts a new entry and goes through the queue again, judged by the new policy. Entries
 * without the bit (DNS flows, exempt traffic) are kept. (Clearing the bit in place with
 * `conntrack -U --mark 0/BIT` fails with "Operation not supported" on kernel 6.18 + conntrack 1.4.7.)
 */
export async function revokeFastPath(
  options: NetfilterOptions & { marks?: SteeringMarks } = {},
): Promise<number> {
  const bit = (options.marks ?? DEFAULT_MARKS).allowedFlow;
  const result = await runTool(
    "conntrack",
    ["-D", "-p", "udp", "--mark", `${hex(bit)}/${hex(bit)}`],
    options,
  );
  const count = conntrackCount(result, "revoke the UDP fast path");
  (options.log ?? (() => {}))(`deleted ${count} allowed UDP conntrack entries`);
  return count;
}
