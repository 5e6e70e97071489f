// Reusable rig for real-kernel end-to-end tests of the daemon: a "runner" network namespace where
// egress runs over clients in a test cgroup, and an "internet" namespace with real servers, joined
// by a veth pair with 10.240.x.y/30 addresses that exist only inside the two namespaces. Names are
// unique per run; everything is removed in finally blocks, also on failure. Not a test file itself.

import { commandExists, isRoot, unmet } from "./requirements.ts";
import { cgroup2MountFrom, type CgroupPath, createCgroup, removeCgroup } from "../../src/kernel/cgroup.ts";
import {
  type CommandResult,
  createCa,
  linkVeth,
  runCommand,
  signLeaf,
} from "../../src/daemon/demo_sandbox.ts";

/** Unique per test run, short enough for interface names (≤ 15 chars with suffixes). */
export const RUN_ID = `eg${(Deno.pid % 46656).toString(36)}${Math.floor(Math.random() * 46656).toString(36)}`;

export const TOOLS = [
  "/usr/sbin/ip",
  "/usr/bin/nsenter",
  "/usr/bin/setpriv",
  "/usr/sbin/iptables",
  "/usr/sbin/iptables-save",
  "/usr/sbin/conntrack",
  "/usr/sbin/bpftool",
  "/usr/bin/openssl",
  "/usr/bin/curl",
  "/usr/bin/python3",
];

export function hasCgroup2(): boolean {
  try {
    return cgroup2MountFrom(Deno.readTextFileSync("/proc/self/mountinfo")) !== undefined;
  } catch {
    return false;
  }
}

/** Why the namespace tests cannot run here, or undefined. */
export function netnsTestsUnmet(extraTools: string[] = []): string | undefined {
  return unmet([
    [Deno.build.os === "linux", "needs Linux"],
    [isRoot(), "needs root"],
    [hasCgroup2(), "needs a cgroup2 mount"],
    [commandExists("/sys/kernel/btf/vmlinux"), "needs kernel BTF (/sys/kernel/btf/vmlinux)"],
    ...[...TOOLS, ...extraTools].map((tool): [boolean, string] => [commandExists(tool), `needs ${tool}`]),
  ]);
}

export type Output = CommandResult;

/** Runs argv to its end (SIGKILL after `timeoutMs`, default 30 s) and collects its output. */
export function run(
  argv: string[],
  options: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Output> {
  return runCommand(argv, { ...options, timeoutMs: options.timeoutMs ?? 30_000 });
}

export async function mustRun(argv: string[], options: { stdin?: string } = {}): Promise<string> {
  const result = await run(argv, options);
  if (result.code !== 0) {
    throw new Error(`${argv.join(" ")} failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

/** A network namespace with lo up. */
export class Netns {
  private constructor(readonly name: string) {}

  static async create(name: string): Promise<Netns> {
    await mustRun(["ip", "netns", "add", name]);
    const netns = new Netns(name);
    try {
      await netns.exec(["ip", "link", "set", "lo", "up"]);
    } catch (error) {
      await netns.remove();
      throw error;
    }
    return netns;
  }

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** argv prefix that runs a command inside (nsenter keeps /sys, unlike ip netns exec). */
  prefix(): string[] {
    return ["nsenter", `--net=${this.path}`];
  }

  exec(argv: string[], options: { stdin?: string } = {}): Promise<string> {
    return mustRun([...this.prefix(), ...argv], options);
  }

  tryExec(argv: string[]): Promise<Output> {
    return run([...this.prefix(), ...argv]);
  }

  async remove(): Promise<void> {
    await run(["ip", "netns", "del", this.name]);
  }
}

export type Topology = {
  runner: Netns;
  internet: Netns;
  /** the runner side of the veth */
  runnerIp: string;
  /** the internet side: where every test server listens */
  internetIp: string;
  /** a second internet address (routed over the veth), for tests that need an IP no name maps to */
  extraIp: string;
  /** the clients' cgroup (the daemon's --cgroup) */
  cgroup: CgroupPath;
  remove(): Promise<void>;
};

/** Creates the two namespaces, the veth pair and the client cgroup; remove() undoes all of it. */
export async function createTopology(tag: string): Promise<Topology> {
  const base = `${RUN_ID}${tag}`;
  const subnet = Math.floor(Math.random() * 64) * 4;
  const third = Math.floor(Math.random() * 256);
  const runnerIp = `10.240.${third}.${subnet + 1}`;
  const internetIp = `10.240.${third}.${subnet + 2}`;
  const extraIp = `10.240.${(third + 1) % 256}.${subnet + 2}`;
  const undo: Array<() => Promise<void>> = [];
  const remove = async () => {
    for (const step of undo.reverse()) await step().catch(() => {});
  };
  try {
    const runner = await Netns.create(`${base}r`);
    undo.push(() => runner.remove());
    const internet = await Netns.create(`${base}i`);
    undo.push(() => internet.remove());
    // The pair is created inside the runner namespace and one end moved: nothing touches the host.
    await linkVeth(
      { netns: runner.path, name: `${base}a`, ip: runnerIp },
      { netns: internet.path, name: `${base}b`, ip: internetIp },
      mustRun,
    );
    await internet.exec(["ip", "addr", "add", `${extraIp}/32`, "dev", `${base}b`]);
    await runner.exec(["ip", "route", "add", `${extraIp}/32`, "via", internetIp]);
    await internet.exec(["ip", "route", "add", `${runnerIp}/32`, "dev", `${base}b`, "src", internetIp]).catch(
      () => {},
    );
    const cgroup = createCgroup(`/${base}-clients`);
    undo.push(() => removeCgroup(cgroup));
    return { runner, internet, runnerIp, internetIp, extraIp, cgroup, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

export type ClientOptions = {
  netns: Netns;
  /** joined BEFORE entering the namespace (the cgroup2 tree is kept by nsenter) */
  cgroup?: CgroupPath;
  /** default: nobody (65534) */
  root?: boolean;
  env?: Record<string, string>;
  stdin?: string;
  timeoutMs?: number;
};

/** Runs a client: joins the cgroup, enters the namespace, drops to nobody, execs argv. */
export function client(options: ClientOptions, argv: string[]): Promise<Output> {
  const drop = options.root ? [] : ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"];
  const script = 'if [ -n "$1" ]; then echo $$ > "$1/cgroup.procs" || exit 99; fi; ns=$2; shift 2; ' +
    'exec nsenter --net="$ns" "$@"';
  const env = options.env ? ["env", ...Object.entries(options.env).map(([k, v]) => `${k}=${v}`)] : [];
  return run(
    ["sh", "-c", script, "sh", options.cgroup?.fsPath ?? "", options.netns.path, ...drop, ...env, ...argv],
    { stdin: options.stdin, timeoutMs: options.timeoutMs },
  );
}

/** A scratch directory readable by the unprivileged clients (CA files). */
export async function scratchDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.chmod(dir, 0o755);
  return dir;
}

export type TestPki = {
  caPem: string;
  caPath: string;
  /** leaf signed by the CA for the given names and IP */
  certPem: string;
  keyPem: string;
  /** self-signed leaf nobody trusts (for `insecure`) */
  selfSignedCertPem: string;
  selfSignedKeyPem: string;
};

/** A throw-away test CA and leaves made with openssl (EC keys: fast). */
export async function createTestPki(dir: string, names: string[], ip: string): Promise<TestPki> {
  const o = (args: string[]) => mustRun(["openssl", ...args]);
  await createCa(dir, `/CN=egress test CA ${RUN_ID}`, 2, mustRun);
  const san = [...names.map((name) => `DNS:${name}`), `IP:${ip}`].join(",");
  await signLeaf(dir, {
    name: "leaf",
    cn: names[0],
    extensions: `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`,
    days: 2,
  }, mustRun);
  await o(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${dir}/self.key`]);
  await o([
    "req",
    "-x509",
    "-new",
    "-key",
    `${dir}/self.key`,
    "-subj",
    `/CN=${names[0]}`,
    "-days",
    "2",
    "-addext",
    `subjectAltName=${san}`,
    "-out",
    `${dir}/self.pem`,
  ]);
  await Deno.chmod(`${dir}/ca.pem`, 0o644);
  const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
  // EC keys as PKCS#8, which every TLS stack accepts.
  const pkcs8 = async (name: string) => await mustRun(["openssl", "pkey", "-in", `${dir}/${name}`]);
  return {
    caPem: await read("ca.pem"),
    caPath: `${dir}/ca.pem`,
    certPem: await read("leaf.pem"),
    keyPem: await pkcs8("leaf.key"),
    selfSignedCertPem: await read("self.pem"),
    selfSignedKeyPem: await pkcs8("self.key"),
  };
}

/** A long-running child process (server or daemon) whose output is collected. */
export class Background {
  #child: Deno.ChildProcess;
  #stdout = "";
  #stderr = "";
  #done: Promise<Deno.CommandStatus>;
  exited = false;

  constructor(argv: string[], options: { env?: Record<string, string>; stdin?: string } = {}) {
    this.#child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
    }).spawn();
    if (options.stdin !== undefined) {
      const writer = this.#child.stdin.getWriter();
      writer.write(new TextEncoder().encode(options.stdin)).then(() => writer.close()).catch(() => {});
    }
    const collect = async (stream: ReadableStream<Uint8Array>, into: (text: string) => void) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) into(decoder.decode(chunk, { stream: true }));
    };
    const out = collect(this.#child.stdout, (t) => (this.#stdout += t));
    const err = collect(this.#child.stderr, (t) => (this.#stderr += t));
    this.#done = Promise.all([this.#child.status, out, err]).then(([status]) => {
      this.exited = true;
      return status;
    });
  }

  get pid(): number {
    return this.#child.pid;
  }
  get stdout(): string {
    return this.#stdout;
  }
  get stderr(): string {
    return this.#stderr;
  }

  /** Waits until `predicate` holds (checked every 50 ms); throws on timeout or early exit. */
  async waitFor(
    what: string,
    predicate: () => boolean | Promise<boolean>,
    timeoutMs = 30_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await predicate())) {
      if (this.exited) throw new Error(`${what}: the process exited first\n${this.#stderr.slice(-4000)}`);
      if (Date.now() > deadline) throw new Error(`${what}: timed out\n${this.#stderr.slice(-4000)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // exited
    }
  }

  /** Waits for the exit (SIGKILL after `timeoutMs`). */
  async wait(timeoutMs = 20_000): Promise<Deno.CommandStatus> {
    const timer = setTimeout(() => this.signal("SIGKILL"), timeoutMs);
    try {
      return await this.#done;
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(signal: Deno.Signal = "SIGTERM", timeoutMs = 20_000): Promise<Deno.CommandStatus> {
    if (!this.exited) this.signal(signal);
    return await this.wait(timeoutMs);
  }
}

export function fileExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * iptables-save of a namespace without comments and counters, and without tables that hold only
 * empty built-in chains with policy ACCEPT (nf_tables creates those on first use): what a
 * before/after comparison must see.
 */
export async function iptablesState(netns: Netns): Promise<string> {
  const text = await netns.exec(["iptables-save"]);
  const tables: string[] = [];
  let current: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\[\d+:\d+\]/g, "[0:0]");
    if (line.startsWith("#") || line === "") continue;
    if (line.startsWith("*")) current = [line];
    else current.push(line);
    if (line === "COMMIT") {
      const meaningful = current.some((l) =>
        l.startsWith("-") || (l.startsWith(":") && !/ ACCEPT \[0:0\]$/.test(l))
      );
      if (meaningful) tables.push(current.join("\n"));
    }
  }
  return tables.join("\n");
}

/** Loaded BPF programs whose name starts with `prefix`. */
export async function bpfProgramIds(prefix = "egress_"): Promise<Set<number>> {
  const programs = JSON.parse(await mustRun(["bpftool", "-j", "prog", "show"])) as Array<
    { id: number; name?: string }
  >;
  return new Set(programs.filter((p) => p.name?.startsWith(prefix)).map((p) => p.id));
}

/** IDs of the programs attached to a cgroup (bpftool cgroup show). */
export async function cgroupProgramIds(cgroup: CgroupPath): Promise<number[]> {
  const text = (await mustRun(["bpftool", "-j", "cgroup", "show", cgroup.fsPath])).trim();
  return text ? (JSON.parse(text) as Array<{ id: number }>).map((entry) => entry.id) : [];
}

/** Programs attached to a cgroup. */
export async function cgroupProgramCount(cgroup: CgroupPath): Promise<number> {
  return (await cgroupProgramIds(cgroup)).length;
}

export async function withTopology<T>(tag: string, fn: (topology: Topology) => Promise<T>): Promise<T> {
  const topology = await createTopology(tag);
  try {
    return await fn(topology);
  } finally {
    await topology.remove();
  }
}
