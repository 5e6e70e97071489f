// The throw-away sandbox `egress demo` runs in: two network namespaces joined by a veth pair with
// 10.240.x.y/30 addresses that exist only inside them, and a cgroup for the demo's clients. Every
// piece is registered for removal the moment it exists, and remove() undoes all of it (also after
// a failure half-way). Nothing of the machine's own network, firewall or cgroups is changed.

import { type CgroupPath, createCgroup, removeCgroup } from "../kernel/cgroup.ts";

export type CommandResult = { code: number; stdout: string; stderr: string };

export async function runCommand(
  argv: string[],
  options: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CommandResult> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
  }, options.timeoutMs ?? 15_000);
  try {
    const output = await child.output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

async function mustRun(argv: string[]): Promise<string> {
  const result = await runCommand(argv);
  if (result.code !== 0) {
    throw new Error(`Cannot run ${argv.join(" ")}: ${result.stderr.trim() || `exit code ${result.code}`}`);
  }
  return result.stdout;
}

/** One end of a veth pair: its namespace (a /run/netns/ path), interface name and /30 address. */
export type VethEnd = { netns: string; name: string; ip: string };

/**
 * Joins two network namespaces with a veth pair, created inside `a`'s namespace and one end moved
 * (the host never sees either end); each end gets its /30 address and is brought up. `run` runs one
 * argv and throws when it fails.
 */
export async function linkVeth(
  a: VethEnd,
  b: VethEnd,
  run: (argv: string[]) => Promise<unknown> = mustRun,
): Promise<void> {
  const inA = ["nsenter", `--net=${a.netns}`], inB = ["nsenter", `--net=${b.netns}`];
  await run([...inA, "ip", "link", "add", a.name, "type", "veth", "peer", "name", b.name]);
  await run([...inA, "ip", "link", "set", b.name, "netns", b.netns]);
  await run([...inA, "ip", "addr", "add", `${a.ip}/30`, "dev", a.name]);
  await run([...inB, "ip", "addr", "add", `${b.ip}/30`, "dev", b.name]);
  await run([...inA, "ip", "link", "set", a.name, "up"]);
  await run([...inB, "ip", "link", "set", b.name, "up"]);
}

export class DemoSandbox {
  readonly prefix: string;
  readonly runnerNetns: string;
  readonly internetNetns: string;
  readonly runnerIp: string;
  readonly internetIp: string;
  cgroup: CgroupPath | undefined;
  readonly #undo: Array<{ what: string; run: () => Promise<void> }> = [];

  constructor() {
    this.prefix = `egdemo${(Deno.pid % 1296).toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
    this.runnerNetns = `${this.prefix}-run`;
    this.internetNetns = `${this.prefix}-net`;
    const third = Math.floor(Math.random() * 256);
    const base = Math.floor(Math.random() * 64) * 4;
    this.runnerIp = `10.240.${third}.${base + 1}`;
    this.internetIp = `10.240.${third}.${base + 2}`;
  }

  /** argv prefix that runs a command inside a namespace, keeping /sys (and so the cgroup tree). */
  inNetns(name: string): string[] {
    return ["nsenter", `--net=/run/netns/${name}`];
  }

  async create(): Promise<void> {
    for (const name of [this.runnerNetns, this.internetNetns]) {
      await mustRun(["ip", "netns", "add", name]);
      this.#undo.push({
        what: `network namespace ${name}`,
        run: () => mustRun(["ip", "netns", "del", name]).then(() => {}),
      });
      await mustRun([...this.inNetns(name), "ip", "link", "set", "lo", "up"]);
    }
    await linkVeth(
      { netns: `/run/netns/${this.runnerNetns}`, name: `${this.prefix}a`, ip: this.runnerIp },
      { netns: `/run/netns/${this.internetNetns}`, name: `${this.prefix}b`, ip: this.internetIp },
    );
    const cgroup = createCgroup(`/${this.prefix}-clients`);
    this.cgroup = cgroup;
    this.#undo.push({ what: `cgroup ${cgroup.hierarchyPath}`, run: () => removeCgroup(cgroup) });
  }

  /** Registers an extra cleanup action (run before the namespaces go). */
  onRemove(what: string, run: () => Promise<void>): void {
    this.#undo.push({ what, run });
  }

  /** Undoes everything in reverse order; returns what could not be removed. */
  async remove(): Promise<string[]> {
    const failures: string[] = [];
    while (this.#undo.length > 0) {
      const step = this.#undo.pop()!;
      try {
        await step.run();
      } catch (error) {
        failures.push(`${step.what}: ${(error as Error).message}`);
      }
    }
    return failures;
  }

  /** Runs a client: joins the demo cgroup, enters the runner namespace, drops to nobody. */
  client(argv: string[], timeoutMs = 8000): Promise<CommandResult> {
    const script = 'echo $$ > "$1/cgroup.procs" || exit 99; ns=$2; shift 2; exec nsenter --net="$ns" "$@"';
    return runCommand([
      "sh",
      "-c",
      script,
      "sh",
      this.cgroup!.fsPath,
      `/run/netns/${this.runnerNetns}`,
      "setpriv",
      "--reuid",
      "65534",
      "--regid",
      "65534",
      "--clear-groups",
      ...argv,
    ], { timeoutMs });
  }
}

type Run = (argv: string[]) => Promise<unknown>;

/** A throw-away CA in `dir` (ca.key, ca.pem; EC P-256) with `subject`, valid for `days`. */
export async function createCa(
  dir: string,
  subject: string,
  days: number,
  run: Run = mustRun,
): Promise<void> {
  await run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${dir}/ca.key`]);
  await run([
    "openssl",
    "req",
    "-x509",
    "-new",
    "-key",
    `${dir}/ca.key`,
    "-subj",
    subject,
    "-days",
    String(days),
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    `${dir}/ca.pem`,
  ]);
}

/**
 * A leaf signed by the CA in `dir` (createCa): `${name}.key` (EC P-256) and `${name}.pem` for CN
 * `cn`, valid for `days`, with `extensions` (openssl extfile text, e.g. the subjectAltName).
 */
export async function signLeaf(
  dir: string,
  leaf: { name: string; cn: string; extensions: string; days: number },
  run: Run = mustRun,
): Promise<void> {
  const path = `${dir}/${leaf.name}`;
  await run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${path}.key`]);
  await run([
    "openssl",
    "req",
    "-new",
    "-key",
    `${path}.key`,
    "-subj",
    `/CN=${leaf.cn}`,
    "-out",
    `${path}.csr`,
  ]);
  await Deno.writeTextFile(`${path}.ext`, leaf.extensions);
  await run([
    "openssl",
    "x509",
    "-req",
    "-in",
    `${path}.csr`,
    "-CA",
    `${dir}/ca.pem`,
    "-CAkey",
    `${dir}/ca.key`,
    "-CAcreateserial",
    "-days",
    String(leaf.days),
    "-extfile",
    `${path}.ext`,
    "-out",
    `${path}.pem`,
  ]);
}

/** A throw-away CA and one server certificate for the demo names (openssl, EC keys). */
export async function demoCertificates(
  dir: string,
  names: string[],
): Promise<{ caPath: string; certPem: string; keyPem: string }> {
  await createCa(dir, "/CN=egress demo internet CA", 1);
  const san = names.map((name) => `DNS:${name}`).join(",");
  await signLeaf(dir, {
    name: "server",
    cn: names[0],
    extensions: `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`,
    days: 1,
  });
  return {
    caPath: `${dir}/ca.pem`,
    certPem: await Deno.readTextFile(`${dir}/server.pem`),
    keyPem: await mustRun(["openssl", "pkey", "-in", `${dir}/server.key`]),
  };
}
