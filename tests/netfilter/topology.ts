// Real-kernel fixture of tests/netfilter (not a test file): three network namespaces joined by veth
// pairs, created directly inside the namespaces so the root namespace never gets an interface,
// a route or a rule.
//
//   container (198.51.100.2) ── veth ── runner (198.51.100.1 | 192.0.2.1) ── veth ── internet (192.0.2.2)
//
// The runner holds the rules under test and forwards for the container. Peers are tests/netfilter/
// peers.py; clients join a cgroup first and then enter the namespace with nsenter (ip netns exec
// would remount /sys and hide the cgroup tree), dropping to nobody with setpriv.
import { commandExists, isRoot, unmet } from "../helpers/requirements.ts";
import { libnetfilterQueueAvailable } from "../../ffi/libnetfilter_queue.ts";
import { cgroup2MountFrom, type CgroupPath, createCgroup, removeCgroup } from "../../src/kernel/cgroup.ts";

export const PYTHON = "/usr/bin/python3";
const PEERS = new URL("./peers.py", import.meta.url).pathname;

const TOOLS = [
  "/usr/sbin/ip",
  "/usr/sbin/iptables",
  "/usr/sbin/iptables-save",
  "/usr/sbin/iptables-restore",
  "/usr/sbin/conntrack",
  "/usr/bin/nsenter",
  "/usr/bin/setpriv",
  PYTHON,
];

function hasCgroup2(): boolean {
  try {
    return cgroup2MountFrom(Deno.readTextFileSync("/proc/self/mountinfo")) !== undefined;
  } catch {
    return false;
  }
}

/** Why the namespace tests cannot run here, or undefined. */
export function netnsTestsUnmet(): string | undefined {
  return unmet([
    [Deno.build.os === "linux", "needs Linux"],
    [isRoot(), "needs root (network namespaces, iptables, cgroups)"],
    [hasCgroup2(), "needs a cgroup2 mount"],
    [libnetfilterQueueAvailable(), "needs libnetfilter_queue.so.1 (Debian package libnetfilter-queue1)"],
    ...TOOLS.map((tool): [boolean, string] => [commandExists(tool), `needs ${tool}`]),
  ]);
}

/** Unique per test run: parallel runs never share a namespace, interface or cgroup name. */
export const RUN = `nf${(Deno.pid % 1296).toString(36)}${Math.floor(Math.random() * 46656).toString(36)}`;

export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(argv: string[]): Promise<Output> {
  const output = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

export async function mustRun(argv: string[]): Promise<string> {
  const result = await run(argv);
  if (result.code !== 0) {
    throw new Error(`${argv.join(" ")} failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

export class Netns {
  constructor(readonly name: string) {}
  get path(): string {
    return `/run/netns/${this.name}`;
  }
  exec(argv: string[]): Promise<string> {
    return mustRun(["nsenter", `--net=${this.path}`, ...argv]);
  }
  tryExec(argv: string[]): Promise<Output> {
    return run(["nsenter", `--net=${this.path}`, ...argv]);
  }
}

export interface As {
  /** Join this cgroup before entering the namespace; default: stay in the test's cgroup. */
  cgroup?: CgroupPath;
  /** Default true: run as nobody. */
  unprivileged?: boolean;
}

function clientArgv(netns: Netns, as: As, argv: string[]): string[] {
  const drop = as.unprivileged === false
    ? []
    : ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"];
  const script = 'if [ -n "$1" ]; then echo $$ > "$1/cgroup.procs" || exit 99; fi; ns=$2; shift 2; ' +
    'exec nsenter --net="$ns" "$@"';
  return ["sh", "-c", script, "sh", as.cgroup?.fsPath ?? "", netns.path, ...drop, ...argv];
}

/** tcp-client: the banner of whoever accepted, or TIMEOUT / REFUSED / ERROR n. */
export async function tcpClient(
  netns: Netns,
  as: As,
  host: string,
  port: number,
  seconds = 1.5,
): Promise<string> {
  const result = await run(
    clientArgv(netns, as, [PYTHON, PEERS, "tcp-client", host, String(port), String(seconds)]),
  );
  if (result.code !== 0) throw new Error(`tcp client failed (${result.code}): ${result.stderr.trim()}`);
  return result.stdout.trim();
}

/** udp-client: the replies to `count` datagrams sent on one socket, space-separated. */
export async function udpClient(
  netns: Netns,
  as: As,
  host: string,
  port: number,
  count = 1,
  seconds = 1.5,
): Promise<string> {
  const result = await run(
    clientArgv(netns, as, [PYTHON, PEERS, "udp-client", host, String(port), String(count), String(seconds)]),
  );
  if (result.code !== 0) throw new Error(`udp client failed (${result.code}): ${result.stderr.trim()}`);
  return result.stdout.trim();
}

/** A long-running child that printed "ready"; stop() kills it by its own pid. */
export class Peer {
  #child: Deno.ChildProcess;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending = "";

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#reader = child.stdout.getReader();
  }

  static async start(argv: string[], stdin = false): Promise<Peer> {
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "inherit",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const peer = new Peer(child);
    try {
      const line = await peer.readLine();
      if (line !== "ready") throw new Error(`peer ${argv.join(" ")} said ${JSON.stringify(line)}`);
    } catch (error) {
      await peer.stop();
      throw error;
    }
    return peer;
  }

  /** A peers.py server inside `netns`, optionally in a cgroup (as root: it binds low ports). */
  static server(netns: Netns, cgroup: CgroupPath | undefined, mode: string, port: number, name: string) {
    return Peer.start(
      clientArgv(netns, { cgroup, unprivileged: false }, [PYTHON, PEERS, mode, String(port), name, "300"]),
    );
  }

  /** A peers.py udp-session client (one socket for the whole session), unprivileged. */
  static udpSession(netns: Netns, as: As, host: string, port: number): Promise<Peer> {
    return Peer.start(clientArgv(netns, as, [PYTHON, PEERS, "udp-session", host, String(port), "1.5"]), true);
  }

  /** Sends one line to a udp-session and returns its answer. */
  async exchange(line: string): Promise<string> {
    await this.send(line);
    return await this.readLine();
  }

  async readLine(): Promise<string> {
    const decoder = new TextDecoder();
    for (;;) {
      const newline = this.#pending.indexOf("\n");
      if (newline >= 0) {
        const line = this.#pending.slice(0, newline);
        this.#pending = this.#pending.slice(newline + 1);
        return line.trim();
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("peer exited early");
      this.#pending += decoder.decode(value);
    }
  }

  async send(line: string): Promise<void> {
    const writer = this.#child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(line + "\n"));
    writer.releaseLock();
  }

  #stopped = false;

  /** SIGKILL by the child's own pid; idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    this.#reader.releaseLock();
    await this.#child.stdout.cancel().catch(() => {});
    try {
      await this.#child.stdin.close();
    } catch {
      // Not piped or already closed.
    }
    await this.#child.status;
  }
}

export class Topology {
  readonly runner = new Netns(`${RUN}r`);
  readonly internet = new Netns(`${RUN}i`);
  readonly container = new Netns(`${RUN}c`);
  exempt!: CgroupPath;
  readonly peers: Peer[] = [];
  #created: Netns[] = [];

  static async create(): Promise<Topology> {
    const topology = new Topology();
    try {
      await topology.#build();
    } catch (error) {
      await topology.destroy();
      throw error;
    }
    return topology;
  }

  async #build(): Promise<void> {
    for (const netns of [this.runner, this.internet, this.container]) {
      await mustRun(["ip", "netns", "add", netns.name]);
      this.#created.push(netns);
      await netns.exec(["ip", "link", "set", "lo", "up"]);
    }
    const { runner, internet, container } = this;
    // Both ends are created inside the namespaces: nothing appears in the root namespace.
    await mustRun([
      "ip",
      "link",
      "add",
      "up0",
      "netns",
      runner.name,
      "type",
      "veth",
      "peer",
      "name",
      "up1",
      "netns",
      internet.name,
    ]);
    await mustRun([
      "ip",
      "link",
      "add",
      "ct0",
      "netns",
      runner.name,
      "type",
      "veth",
      "peer",
      "name",
      "ct1",
      "netns",
      container.name,
    ]);
    await runner.exec(["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"]);
    await runner.exec(["ip", "addr", "add", "198.51.100.1/24", "dev", "ct0"]);
    await internet.exec(["ip", "addr", "add", "192.0.2.2/24", "dev", "up1"]);
    await container.exec(["ip", "addr", "add", "198.51.100.2/24", "dev", "ct1"]);
    for (
      const [netns, link] of [[runner, "up0"], [runner, "ct0"], [internet, "up1"], [
        container,
        "ct1",
      ]] as const
    ) {
      await netns.exec(["ip", "link", "set", link, "up"]);
    }
    await container.exec(["ip", "route", "add", "default", "via", "198.51.100.1"]);
    await internet.exec(["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"]);
    // Per-namespace sysctl: /proc/sys/net belongs to the namespace of whoever opens it.
    await runner.exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    this.exempt = createCgroup(`/${RUN}-exempt`);
  }

  async startPeer(netns: Netns, cgroup: CgroupPath | undefined, mode: string, port: number, name: string) {
    const peer = await Peer.server(netns, cgroup, mode, port, name);
    this.peers.push(peer);
    return peer;
  }

  async destroy(): Promise<void> {
    for (const peer of this.peers.splice(0)) await peer.stop();
    for (const netns of this.#created.splice(0)) await run(["ip", "netns", "del", netns.name]);
    if (this.exempt) await removeCgroup(this.exempt);
  }
}
