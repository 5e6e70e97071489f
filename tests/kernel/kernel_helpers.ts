// Shared helpers of the real-kernel BPF tests: namespaces, cgroups, clients run as nobody inside
// a test cgroup, and a child process holding one egress instance. Not a test file itself.
import { commandExists, isRoot, unmet } from "../helpers/requirements.ts";
import { cgroup2MountFrom, type CgroupPath, createCgroup, removeCgroup } from "../../src/kernel/cgroup.ts";

/** Unique per test run, short enough for interface and netns names. */
export const RUN = `egk${(Deno.pid % 46656).toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;

const TOOLS = [
  "/usr/sbin/ip",
  "/usr/bin/nsenter",
  "/usr/bin/setpriv",
  "/usr/bin/python3",
  "/usr/sbin/iptables",
  "/usr/sbin/bpftool",
];

function hasCgroup2(): boolean {
  try {
    return cgroup2MountFrom(Deno.readTextFileSync("/proc/self/mountinfo")) !== undefined;
  } catch {
    return false;
  }
}

function hasBtf(): boolean {
  try {
    Deno.statSync("/sys/kernel/btf/vmlinux");
    return true;
  } catch {
    return false;
  }
}

/** Why the kernel tests cannot run here, or undefined. */
export function kernelTestsUnmet(extraTools: string[] = []): string | undefined {
  return unmet([
    [isRoot(), "needs root"],
    [Deno.build.os === "linux", "needs Linux"],
    [hasBtf(), "needs kernel BTF (/sys/kernel/btf/vmlinux)"],
    [hasCgroup2(), "needs a cgroup2 mount"],
    ...[...TOOLS, ...extraTools].map((tool): [boolean, string] => [commandExists(tool), `needs ${tool}`]),
  ]);
}

export interface Output {
  code: number;
  stdout: string;
  stderr: string;
  pid: number;
}

export async function run(argv: string[], options: { stdin?: string } = {}): Promise<Output> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const result = await child.output();
  const decoder = new TextDecoder();
  return {
    code: result.code,
    stdout: decoder.decode(result.stdout),
    stderr: decoder.decode(result.stderr),
    pid: child.pid,
  };
}

export async function mustRun(argv: string[]): Promise<string> {
  const result = await run(argv);
  if (result.code !== 0) {
    throw new Error(`${argv.join(" ")} failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

/** A network namespace with lo up, removed by remove(): the shared rig's class. */
export { Netns as TestNetns } from "../helpers/netns.ts";
import type { Netns as TestNetns } from "../helpers/netns.ts";

export interface ClientOptions {
  /** Join this cgroup before entering the namespace (default: stay where the test runs). */
  cgroup?: CgroupPath;
  netns: TestNetns;
  /** Default "nobody" (uid/gid 65534). */
  user?: "nobody" | "root";
  stdin?: string;
}

/**
 * Runs a client: joins the cgroup first (ip netns exec would remount /sys), enters the netns,
 * drops to nobody. The returned pid is the client's own (sh, nsenter and setpriv all exec).
 */
export function client(options: ClientOptions, argv: string[]): Promise<Output> {
  const drop = (options.user ?? "nobody") === "nobody"
    ? ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    : [];
  const script = 'if [ -n "$1" ]; then echo $$ > "$1/cgroup.procs" || exit 99; fi; ns=$2; shift 2; ' +
    'exec nsenter --net="$ns" "$@"';
  return run(
    ["sh", "-c", script, "sh", options.cgroup?.fsPath ?? "", options.netns.path, ...drop, ...argv],
    { stdin: options.stdin },
  );
}

/** Parses the last stdout line as JSON; throws with the client's stderr otherwise. */
export function jsonOf<T>(output: Output): T {
  const line = output.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`client printed no JSON (exit ${output.code}): ${output.stdout} ${output.stderr}`);
  }
}

export async function withCgroup<T>(name: string, fn: (cgroup: CgroupPath) => Promise<T>): Promise<T> {
  const cgroup = createCgroup(`/${RUN}-${name}`);
  try {
    return await fn(cgroup);
  } finally {
    await removeCgroup(cgroup);
  }
}

/** A child Deno process holding one egress instance (tests/kernel/instance_child.ts). */
export class InstanceChild {
  #child: Deno.ChildProcess;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending = "";
  ready!: { netnsCookie: string; programs: string[]; leftovers: number };

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#reader = child.stdout.getReader();
  }

  /** Starts the child in `netns` (or the test's own netns) and waits for it to be attached. */
  static async start(options: Record<string, unknown>, netns?: TestNetns): Promise<InstanceChild> {
    const script = new URL("./instance_child.ts", import.meta.url).pathname;
    const deno = [Deno.execPath(), "run", "-A", script, JSON.stringify(options)];
    const argv = netns ? ["nsenter", `--net=${netns.path}`, ...deno] : deno;
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const instance = new InstanceChild(child);
    try {
      instance.ready = await instance.#readLine() as typeof instance.ready;
    } catch (error) {
      instance.kill();
      throw error;
    }
    return instance;
  }

  get pid(): number {
    return this.#child.pid;
  }

  async #readLine(): Promise<unknown> {
    const decoder = new TextDecoder();
    for (;;) {
      const newline = this.#pending.indexOf("\n");
      if (newline >= 0) {
        const line = this.#pending.slice(0, newline);
        this.#pending = this.#pending.slice(newline + 1);
        return JSON.parse(line);
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("egress instance child exited early");
      this.#pending += decoder.decode(value);
    }
  }

  async request(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const writer = this.#child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(JSON.stringify(body) + "\n"));
    writer.releaseLock();
    return await this.#readLine() as Record<string, unknown>;
  }

  /** Asks the child to close its instance and exit. */
  async stop(): Promise<void> {
    try {
      await this.request({ op: "exit" });
    } catch {
      // Already gone.
    }
    await this.#finish();
  }

  /** SIGKILL: what a crashed daemon looks like. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.#finish();
  }

  async #finish(): Promise<void> {
    try {
      await this.#child.stdin.close();
    } catch {
      // Closed already.
    }
    this.#reader.releaseLock();
    await this.#child.stdout.cancel().catch(() => {});
    await this.#child.status;
  }
}

/** IDs of loaded BPF programs whose name starts with `prefix` (bpftool prog show). */
export async function bpfProgramIds(prefix = "egress_"): Promise<Set<number>> {
  const programs = JSON.parse(await mustRun(["bpftool", "-j", "prog", "show"])) as Array<
    { id: number; name?: string }
  >;
  return new Set(programs.filter((p) => p.name?.startsWith(prefix)).map((p) => p.id));
}

/** Programs attached to a cgroup (bpftool cgroup show). */
export async function cgroupPrograms(cgroup: CgroupPath): Promise<Array<{ id: number; name: string }>> {
  const text = (await mustRun(["bpftool", "-j", "cgroup", "show", cgroup.fsPath])).trim();
  return text ? JSON.parse(text) : [];
}

/**
 * 192.0.2.1/24 and fd00:e9::1/64 on a veth pair whose both ends stay inside the namespace (no
 * dummy module here): packets to other 192.0.2.x addresses go nowhere, nothing leaves the netns.
 */
export async function addTestAddresses(netns: TestNetns): Promise<void> {
  await netns.exec(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
  await netns.exec(["ip", "addr", "add", "192.0.2.1/24", "dev", "v0"]);
  await netns.exec(["ip", "-6", "addr", "add", "fd00:e9::1/64", "dev", "v0", "nodad"]);
  await netns.exec(["ip", "link", "set", "v1", "up"]);
  await netns.exec(["ip", "link", "set", "v0", "up"]);
}
