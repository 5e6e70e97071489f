// Shared fixture of the sidecar integration tests: namespaces `pod` and `world` joined by a veth
// pair (IPv4 /30, IPv6 ULA /64), a test peer in `world`, the sidecar and an unprivileged "app" in
// `pod`. Nothing here touches the root network namespace's firewall, routes or DNS.
import { commandExists, isRoot, unmet } from "../helpers/requirements.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
export const MOD = `${ROOT}mod.ts`;
const WORLD_SERVER = new URL("./fixtures/world_server.ts", import.meta.url).pathname;
const APP_PROBE = new URL("./fixtures/app_probe.py", import.meta.url).pathname;

const TOOLS = [
  "/usr/sbin/ip",
  "/usr/bin/nsenter",
  "/usr/bin/setpriv",
  "/usr/sbin/nft",
  "/usr/bin/dig",
  "/usr/bin/curl",
  "/usr/bin/python3",
  "/usr/sbin/iptables",
  "/usr/sbin/sysctl",
];

export function sidecarTestsUnmet(): string | undefined {
  return unmet([
    [isRoot(), "needs root"],
    [Deno.build.os === "linux", "needs Linux"],
    ...TOOLS.map((tool): [boolean, string] => [commandExists(tool), `needs ${tool}`]),
  ]);
}

export const POD4 = "198.18.0.1";
export const WORLD4 = "198.18.0.2";
export const POD6 = "fd65:6772::1";
export const WORLD6 = "fd65:6772::2";
/** extra addresses of `world` that no name points to unless a record says so */
export const EXTRA4 = ["198.19.0.11", "198.19.0.12", "198.19.0.13", "198.19.0.20", "198.19.0.30"];
export const EXTRA6 = ["fd65:6772:1::11", "fd65:6772:1::20"];

export const RECORDS = {
  "allowed.test": { A: [WORLD4], AAAA: [WORLD6], ttl: 30 }, // clamped up to 60
  "long.test": { A: ["198.19.0.11"], ttl: 1000 }, // clamped down to 360
  "mid.test": { A: ["198.19.0.12"], AAAA: ["fd65:6772:1::11"], ttl: 200 },
  "denied.test": { A: ["198.19.0.13"], ttl: 100 },
  "doh.test": { A: ["198.19.0.20"], AAAA: ["fd65:6772:1::20"], ttl: 100 },
  "other.allowed.test": { A: ["198.19.0.30"], ttl: 100 },
};

export type Output = { code: number; stdout: string; stderr: string };

export async function run(argv: string[], options: { env?: Record<string, string> } = {}): Promise<Output> {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

async function must(argv: string[]): Promise<string> {
  const r = await run(argv);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

let counter = 0;

export class Topology {
  readonly pod: string;
  readonly world: string;
  /** veth ends in `pod` and `world` */
  readonly podLink: string;
  readonly worldLink: string;
  #worldServer: Deno.ChildProcess | undefined;

  private constructor(readonly id: string) {
    this.pod = `${id}p`;
    this.world = `${id}w`;
    this.podLink = `${id}a`;
    this.worldLink = `${id}b`;
  }

  /** Unique names per run and per topology (parallel runs never collide). */
  static async create(): Promise<Topology> {
    const id = `esc${(Deno.pid % 1296).toString(36)}${
      Math.floor(Math.random() * 1296).toString(36)
    }${counter++}`;
    const t = new Topology(id);
    try {
      await must(["ip", "netns", "add", t.pod]);
      await must(["ip", "netns", "add", t.world]);
      const vp = t.podLink, vw = t.worldLink;
      await must([
        "ip",
        "link",
        "add",
        vp,
        "netns",
        t.pod,
        "type",
        "veth",
        "peer",
        "name",
        vw,
        "netns",
        t.world,
      ]);
      const inPod = (...a: string[]) => must(["ip", "-n", t.pod, ...a]);
      const inWorld = (...a: string[]) => must(["ip", "-n", t.world, ...a]);
      await inPod("link", "set", "lo", "up");
      await inWorld("link", "set", "lo", "up");
      await inPod("addr", "add", `${POD4}/30`, "dev", vp);
      await inWorld("addr", "add", `${WORLD4}/30`, "dev", vw);
      await inPod("-6", "addr", "add", `${POD6}/64`, "dev", vp, "nodad");
      await inWorld("-6", "addr", "add", `${WORLD6}/64`, "dev", vw, "nodad");
      for (const a of EXTRA4) await inWorld("addr", "add", `${a}/32`, "dev", vw);
      for (const a of EXTRA6) await inWorld("-6", "addr", "add", `${a}/128`, "dev", vw, "nodad");
      await inPod("link", "set", vp, "up");
      await inWorld("link", "set", vw, "up");
      await inPod("route", "add", "default", "via", WORLD4);
      await inPod("-6", "route", "add", "default", "via", WORLD6);
      await t.#startWorld();
    } catch (error) {
      await t.destroy();
      throw error;
    }
    return t;
  }

  async #startWorld(): Promise<void> {
    const config = JSON.stringify({ addresses: [WORLD4, WORLD6, ...EXTRA4, ...EXTRA6], records: RECORDS });
    this.#worldServer = new Deno.Command("nsenter", {
      args: [`--net=/run/netns/${this.world}`, Deno.execPath(), "run", "-A", WORLD_SERVER, config],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const reader = this.#worldServer.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    const timeout = setTimeout(() => this.#worldServer?.kill("SIGKILL"), 30_000);
    while (!seen.includes("READY")) {
      const { done, value } = await reader.read();
      if (done) throw new Error("world server exited before READY");
      seen += value;
    }
    clearTimeout(timeout);
    reader.releaseLock();
    this.#worldServer.stdout.cancel().catch(() => {});
  }

  /** Runs a command inside `pod` as root (the sidecar's privileges). */
  inPod(argv: string[], env?: Record<string, string>): Promise<Output> {
    return run(["nsenter", `--net=/run/netns/${this.pod}`, ...argv], { env });
  }

  /**
   * Runs the "app": inside `pod`, as nobody without capabilities, or with `ambientCaps` (e.g.
   * `net_raw`, which Docker and containerd grant containers by default) to probe what they allow.
   */
  app(argv: string[], ambientCaps: string[] = []): Promise<Output> {
    return run(this.#appArgv(argv, ambientCaps));
  }

  /** A long-running app process (stdout piped, stderr inherited). */
  spawnApp(argv: string[]): Deno.ChildProcess {
    const [command, ...args] = this.#appArgv(argv, []);
    return new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "inherit" }).spawn();
  }

  #appArgv(argv: string[], ambientCaps: string[]): string[] {
    const added = ambientCaps.map((c) => `+${c}`).join(",");
    const caps = ambientCaps.length === 0
      ? ["--inh-caps=-all"]
      : [`--inh-caps=-all,${added}`, `--ambient-caps=${added}`];
    return [
      "nsenter",
      `--net=/run/netns/${this.pod}`,
      "setpriv",
      "--reuid",
      "65534",
      "--regid",
      "65534",
      "--clear-groups",
      ...caps,
      ...argv,
    ];
  }

  /** One word from fixtures/app_probe.py run as the app (see there for the modes). */
  async probe(args: string[], ambientCaps: string[] = []): Promise<string> {
    const r = await this.app(["/usr/bin/python3", APP_PROBE, ...args], ambientCaps);
    if (r.code !== 0) throw new Error(`app_probe ${args.join(" ")} failed: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  /**
   * The link-local address of `world`'s veth end, scoped to `pod`'s (`fe80::…%if`), once duplicate
   * address detection has finished on both ends (a tentative address neither sends nor answers).
   */
  async worldLinkLocal(): Promise<string> {
    const show = (ns: string, dev: string) =>
      must(["ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link"]);
    for (let attempt = 0; attempt < 50; attempt++) {
      const [world, pod] = [await show(this.world, this.worldLink), await show(this.pod, this.podLink)];
      const address = /inet6 (fe80::[0-9a-f:]+)\//.exec(world)?.[1];
      if (address !== undefined && /fe80::/.test(pod) && !/tentative/.test(world + pod)) {
        return `${address}%${this.podLink}`;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no usable link-local address on ${this.worldLink}`);
  }

  /**
   * Docker's embedded-DNS rule inside `pod` (127.0.0.11:53 → a private port, nothing listening):
   * it also makes conntrack track flows in the namespace before any sidecar starts.
   */
  async addDockerDnsNat(): Promise<void> {
    const r = await this.inPod([
      "iptables",
      "-t",
      "nat",
      "-A",
      "OUTPUT",
      "-d",
      "127.0.0.11/32",
      "-p",
      "udp",
      "--dport",
      "53",
      "-j",
      "DNAT",
      "--to-destination",
      "127.0.0.11:53000",
    ]);
    if (r.code !== 0) throw new Error(`iptables DNAT failed: ${r.stderr.trim()}`);
  }

  /** Sets a sysctl of `pod` (per network namespace). */
  async podSysctl(key: string, value: string): Promise<void> {
    const r = await this.inPod(["sysctl", "-q", "-w", `${key}=${value}`]);
    if (r.code !== 0) throw new Error(`sysctl ${key} failed: ${r.stderr.trim()}`);
  }

  /** Lets unprivileged users of `pod` open ICMP echo sockets (Docker's default in containers). */
  allowPingSockets(): Promise<void> {
    return this.podSysctl("net.ipv4.ping_group_range", "0 2147483647");
  }

  /** `dig` in the app; returns the answer addresses and the status. */
  async dig(
    name: string,
    type = "A",
    server = WORLD4,
    tcp = false,
    sourcePort?: number,
  ): Promise<{ status: string; addresses: string[] }> {
    const r = await this.app([
      "dig",
      ...(sourcePort === undefined ? [] : ["-b", `${server.includes(":") ? POD6 : POD4}#${sourcePort}`]),
      `@${server}`,
      name,
      type,
      "+time=3",
      "+tries=1",
      ...(tcp ? ["+tcp"] : []),
    ]);
    const status = /status: ([A-Z]+)/.exec(r.stdout)?.[1] ??
      `no reply (${r.stdout.trim().split("\n").pop()})`;
    const addresses = [...r.stdout.matchAll(/^[^;\s]\S*\s+\d+\s+IN\s+(?:A|AAAA)\s+(\S+)$/gm)].map((m) =>
      m[1]
    );
    return { status, addresses };
  }

  /** TCP connect from the app within 1.5 s; true when the peer's "ok" banner arrived. */
  async connects(address: string, port: number): Promise<boolean> {
    const host = address.includes(":") ? `[${address}]` : address;
    const r = await this.app([
      "curl",
      "-s",
      "--max-time",
      "1.5",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://${host}:${port}/`,
    ]);
    // the banner peers answer "ok\n" (HTTP/0.9 to curl: exit 1 or 8 with output); HTTP peers 200
    if (port === 80) return r.stdout.trim() === "200";
    return r.code !== 28 && r.code !== 7 && (r.code === 0 || r.code === 1 || r.code === 8 || r.code === 56);
  }

  async nft(args: string[]): Promise<Output> {
    return await this.inPod(["nft", ...args]);
  }

  async destroy(): Promise<void> {
    try {
      this.#worldServer?.kill("SIGKILL");
      await this.#worldServer?.status;
    } catch {
      // already gone
    }
    await run(["ip", "netns", "del", this.pod]);
    await run(["ip", "netns", "del", this.world]);
  }
}

export type SidecarHandle = {
  process: Deno.ChildProcess;
  api: string;
  token: string;
  stdout: () => string;
  stderr: () => string;
  /** SIGTERM; resolves with the exit code */
  stop(): Promise<number>;
};

/** Starts `egress sidecar` inside `pod` and waits for its ready file. */
export async function startSidecar(
  topology: Topology,
  args: string[],
  options: {
    env?: Record<string, string>;
    token?: string | null;
    waitReady?: boolean;
    /** instead of the world's resolver */
    upstream?: string;
  } = {},
): Promise<SidecarHandle> {
  const dir = await Deno.makeTempDir({ prefix: "egress-sidecar-" });
  const token = options.token === undefined ? `tok-${crypto.randomUUID()}` : options.token ?? "";
  const tokenArgs: string[] = [];
  if (options.token !== null) {
    await Deno.writeTextFile(`${dir}/token`, token + "\n");
    tokenArgs.push("--api-token-file", `${dir}/token`);
  }
  const ready = `${dir}/ready`;
  const process = new Deno.Command("nsenter", {
    args: [
      `--net=/run/netns/${topology.pod}`,
      Deno.execPath(),
      "run",
      "-A",
      MOD,
      "sidecar",
      "--upstream",
      options.upstream ?? WORLD4,
      "--api",
      "127.0.0.1:18080",
      "--ready-file",
      ready,
      ...tokenArgs,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", ...options.env },
  }).spawn();
  let out = "", err = "";
  const collect = async (stream: ReadableStream<Uint8Array>, add: (s: string) => void) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) add(chunk);
  };
  const done = Promise.all([
    collect(process.stdout, (s) => (out += s)),
    collect(process.stderr, (s) => (err += s)),
  ]);
  const handle: SidecarHandle = {
    process,
    api: "http://127.0.0.1:18080",
    token,
    stdout: () => out,
    stderr: () => err,
    async stop() {
      try {
        process.kill("SIGTERM");
      } catch {
        // already exited
      }
      const status = await process.status;
      await done;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return status.code;
    },
  };
  if (options.waitReady === false) return handle;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await Deno.stat(ready);
      return handle;
    } catch {
      // not yet
    }
    const exited = await Promise.race([
      process.status.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 100)),
    ]);
    if (exited || Date.now() > deadline) {
      await handle.stop();
      throw new Error(`sidecar did not become ready:\n${err}`);
    }
  }
}

/** An API request made from inside `pod` (the API listens on the pod's loopback). */
export async function api(
  topology: Topology,
  handle: SidecarHandle,
  method: string,
  path: string,
  options: { body?: string; type?: string; token?: string | null } = {},
): Promise<{ status: number; body: string }> {
  const token = options.token === undefined ? handle.token : options.token;
  const args = [
    "curl",
    "-s",
    "-o",
    "-",
    "-w",
    "\n%{http_code}",
    "-X",
    method,
    `${handle.api}${path}`,
    "--max-time",
    "10",
  ];
  if (token !== null) args.push("-H", `Authorization: Bearer ${token}`);
  if (options.type !== undefined) args.push("-H", `Content-Type: ${options.type}`);
  if (options.body !== undefined) args.push("--data-binary", "@-");
  const child = new Deno.Command("nsenter", {
    args: [`--net=/run/netns/${topology.pod}`, ...args],
    stdin: options.body === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.body !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.body));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  const cut = text.lastIndexOf("\n");
  return { status: Number(text.slice(cut + 1)), body: text.slice(0, cut) };
}
