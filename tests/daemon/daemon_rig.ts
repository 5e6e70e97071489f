// Starts the internet servers and `egress start` inside a topology of tests/helpers/netns.ts.
// Not a test file itself.
import {
  Background,
  createTestPki,
  mustRun,
  RUN_ID,
  scratchDir,
  type TestPki,
  type Topology,
} from "../helpers/netns.ts";

import { removeLeftoverPins } from "../../src/kernel/bpf_loader.ts";
import { cgroup2Mount } from "../../src/kernel/cgroup.ts";
import { instanceName } from "../../src/daemon/config.ts";
import { removeStaleOwnCgroups } from "../../src/daemon/own_cgroup.ts";

export const MOD_TS = new URL("../../mod.ts", import.meta.url).pathname;
export const TEST_NAMES = [
  "allowed.egress.test",
  "denied.egress.test",
  "api.egress.test",
  "pass.egress.test",
  "insecure.egress.test",
  "strict.egress.test",
  "spoof.egress.test",
  "a.wild.egress.test",
  "wild.egress.test",
];

export const DENO_ENV = { DENO_NO_UPDATE_CHECK: "1", PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };

export type Internet = { pki: TestPki; server: Background; dns: Background; stop(): Promise<void> };

/** Servers and dnsmasq (every *.egress.test name → the internet address) in the internet netns. */
export async function startInternet(topology: Topology, dir: string): Promise<Internet> {
  const pki = await createTestPki(dir, [...TEST_NAMES, "*.egress.test"], topology.extraIp);
  const script = new URL("./fixtures/internet_server.ts", import.meta.url).pathname;
  const server = new Background([
    ...topology.internet.prefix(),
    Deno.execPath(),
    "run",
    "-A",
    script,
    JSON.stringify({ hostname: topology.internetIp, ...pki }),
  ], { env: DENO_ENV });
  const dns = new Background([
    ...topology.internet.prefix(),
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--bind-interfaces",
    `--listen-address=${topology.internetIp}`,
    "--port=53",
    `--address=/egress.test/${topology.internetIp}`,
    "--pid-file=",
    "--user=root",
    "--log-facility=-",
  ]);
  const stop = async () => {
    await server.stop("SIGKILL");
    await dns.stop("SIGKILL");
  };
  try {
    await server.waitFor("internet servers", () => server.stdout.includes('"ready":true'));
    await dns.waitFor("dnsmasq", async () => {
      const probe = await topology.internet.tryExec([
        "dig",
        "+short",
        "+time=1",
        "+tries=1",
        `@${topology.internetIp}`,
        "probe.egress.test",
      ]);
      return probe.stdout.trim() === topology.internetIp;
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { pki, server, dns, stop };
}

export type DaemonPaths = {
  dir: string;
  stateDir: string;
  log: string;
  oplog: string;
  socket: string;
  ready: string;
  policy: string;
  /** copy of the egress CA readable by the unprivileged clients */
  egressCa: string;
};

export async function daemonPaths(tag: string): Promise<DaemonPaths> {
  const dir = await scratchDir(`egress-e2e-${RUN_ID}-${tag}-`);
  return {
    dir,
    stateDir: `${dir}/state`,
    log: `${dir}/log/connections.jsonl`,
    oplog: `${dir}/log/egress.log`,
    socket: `${dir}/egress.sock`,
    ready: `${dir}/ready`,
    policy: `${dir}/policy.txt`,
    egressCa: `${dir}/egress-ca.pem`,
  };
}

export function egressArgv(topology: Topology, command: string, args: string[]): string[] {
  return [...topology.runner.prefix(), Deno.execPath(), "run", "-A", MOD_TS, command, ...args];
}

export class DaemonRun {
  private constructor(
    readonly process: Background,
    readonly paths: DaemonPaths,
    readonly topology: Topology,
  ) {}

  static async start(
    topology: Topology,
    paths: DaemonPaths,
    options: { policy: string; upstreamCa?: string; extra?: string[] },
  ): Promise<DaemonRun> {
    await Deno.writeTextFile(paths.policy, options.policy);
    const args = [
      "--policy",
      paths.policy,
      "--cgroup",
      topology.cgroup.hierarchyPath,
      "--state-dir",
      paths.stateDir,
      "--log",
      paths.log,
      "--control-socket",
      paths.socket,
      "--ready-file",
      paths.ready,
      ...(options.upstreamCa ? ["--upstream-ca", options.upstreamCa] : []),
      ...(options.extra ?? []),
    ];
    const process = new Background(egressArgv(topology, "start", args), { env: DENO_ENV });
    const run = new DaemonRun(process, paths, topology);
    try {
      // The ready file holds the daemon's pid (a stale one from a killed run does not count).
      const readyPid = () =>
        Deno.readTextFile(paths.ready).then((text) => text.trim() === String(process.pid), () => false);
      await process.waitFor("egress start", readyPid, 60_000);
      await Deno.writeTextFile(paths.egressCa, await Deno.readTextFile(`${paths.stateDir}/ca.pem`));
      await Deno.chmod(paths.egressCa, 0o644);
    } catch (error) {
      await process.stop("SIGKILL");
      throw error;
    }
    return run;
  }

  async logLines(): Promise<Record<string, unknown>[]> {
    let text = "";
    try {
      text = await Deno.readTextFile(this.paths.log);
    } catch {
      return [];
    }
    return text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
  }

  /** Waits until a log line satisfies `predicate` (the log is written asynchronously). */
  async waitForLine(
    what: string,
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs = 5000,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = (await this.logLines()).find(predicate);
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `no log line for ${what}; log:\n${
            (await this.logLines()).map((l) => JSON.stringify(l)).join("\n")
          }`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async stop(): Promise<Deno.CommandStatus> {
    return await this.process.stop("SIGTERM", 30_000);
  }

  async kill(): Promise<void> {
    await this.process.stop("SIGKILL");
  }
}

/**
 * After a test that may have killed a daemon: removes the BPF pins and empty egress cgroups such
 * a daemon leaves (a clean stop leaves none; the namespaces take the rules with them).
 */
export function removeDaemonLeftovers(paths: DaemonPaths): void {
  removeLeftoverPins(instanceName(paths.stateDir));
  removeStaleOwnCgroups(cgroup2Mount());
}

export async function egressCommand(topology: Topology, command: string, args: string[]) {
  const { run } = await import("../helpers/netns.ts");
  return await run(egressArgv(topology, command, args), { env: DENO_ENV, timeoutMs: 60_000 });
}

export { mustRun };
