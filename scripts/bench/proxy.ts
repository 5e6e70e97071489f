// Proxy benchmark (root): direct vs egress vs mitmproxy (transparent) vs squid (ssl-bump), all
// intercepting HTTPS on one namespace rig (tests/helpers/netns.ts): a "client" namespace (clients in a
// test cgroup, the proxy under test and its REDIRECT) and an "upstream" namespace (nginx-light with a
// throw-away CA). Names are unique per run; everything is removed on exit, error, SIGINT/SIGTERM and
// after a watchdog. Nothing touches the root namespace's firewall, routes or DNS.
//
// Per target: keep-alive requests/s (wrk -c 1/10/50), new-connection latency (cached certificate),
// 100 MB download throughput, proxy RSS per idle connection (1,000 connections), CPU µs per request
// (proxy process tree across the -c 10 wrk run) and start-to-ready time. Writes docs/benchmarks.md.
// Run: DENO_NO_UPDATE_CHECK=1 deno run -A scripts/bench/proxy.ts [--quick] [--no-docs]
import { Background, createTestPki, mustRun, run, RUN_ID, type Topology } from "../../tests/helpers/netns.ts";
import { createTopology } from "../../tests/helpers/netns.ts";
import { removeLeftoverPins } from "../../src/kernel/bpf_loader.ts";
import { cgroup2Mount } from "../../src/kernel/cgroup.ts";
import { instanceName } from "../../src/daemon/config.ts";
import { removeStaleOwnCgroups } from "../../src/daemon/own_cgroup.ts";

const QUICK = Deno.args.includes("--quick");
/** --profile=FILE: egress runs under V8's sampling profiler (node --prof-process FILE reads it). */
const PROFILE_OUT = Deno.args.find((a) => a.startsWith("--profile="))?.slice(10);
const WRITE_DOCS = !Deno.args.includes("--no-docs");
const UPSTREAM_NAME = "bench.egress.test";
const WRK_SECONDS = QUICK ? 2 : 5;
const CONNECTION_COUNTS = [1, 10, 50] as const;
const LATENCY_WARMUP = 10;
const LATENCY_COUNT = QUICK ? 50 : 200;
const IDLE_CONNECTIONS = QUICK ? 200 : 1000;
const DOWNLOAD_MB = 100;
const DOWNLOAD_LIMIT_S = 100;
const FILE_SIZES: Record<string, number> = { "big.bin": DOWNLOAD_MB << 20 };
const WATCHDOG_MS = 8 * 60_000;
const RIG = new URL("./proxy_rig/", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
const ENV = { DENO_NO_UPDATE_CHECK: "1", PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root" };
const PORTS = { mitmproxy: 18081, squid: 13129, squidHttp: 13128 };
const CLOCK_TICKS = 100; // USER_HZ on Linux

type TargetName = "direct" | "egress" | "squid" | "mitmproxy";
const TARGETS: TargetName[] = ["direct", "egress", "squid", "mitmproxy"];

type Result = {
  rps: Record<number, number>;
  wrkErrors: string[];
  cpuUsPerRequest?: number;
  newConnection?: { p50: number; p99: number; n: number; errors: number };
  throughputMBs?: number;
  throughputNote?: string;
  /** the download did not finish: throughputMBs is an upper bound */
  throughputBound?: boolean;
  idle?: { open: number; rssBeforeKB: number; rssAfterKB: number; perConnectionKB: number };
  readyMs?: number;
  /** direct new-connection latency measured right before this proxy started (same load) */
  baseline?: { p50: number; p99: number };
  notes: string[];
};

// ---------------------------------------------------------------- cleanup

const cleanups: Array<() => Promise<void> | void> = [];
let cleaning: Promise<void> | undefined;
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch (error) {
        console.error(`cleanup: ${(error as Error).message}`);
      }
    }
  })();
  return cleaning;
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    console.error(`\n${signal}: cleaning up`);
    cleanupAll().finally(() => Deno.exit(130));
  });
}

// ---------------------------------------------------------------- /proc helpers

function childrenOf(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry.name));
      children.set(ppid, list);
    } catch {
      // gone
    }
  }
  return children;
}

function processTree(pid: number): number[] {
  const children = childrenOf();
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const next = stack.pop()!;
    out.push(next);
    stack.push(...(children.get(next) ?? []));
  }
  return out;
}

/** utime+stime of a process tree in µs. */
function cpuMicros(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const fields = Deno.readTextFileSync(`/proc/${p}/stat`).split(") ")[1].split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    } catch {
      // gone
    }
  }
  return ticks * (1_000_000 / CLOCK_TICKS);
}

/** VmRSS of a process tree in KB. */
function rssKB(pid: number): number {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${p}/status`));
      if (match) total += Number(match[1]);
    } catch {
      // gone
    }
  }
  return total;
}

/** Whether the process's network namespace has a TCP socket listening on `port`. */
function listening(pid: number, port: number): boolean {
  try {
    const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
    return Deno.readTextFileSync(`/proc/${pid}/net/tcp`).split("\n").some((line) => {
      const fields = line.trim().split(/\s+/);
      return fields[1]?.endsWith(`:${hexPort}`) && fields[3] === "0A";
    });
  } catch {
    return false;
  }
}

/**
 * Stops a process and every descendant (nginx and squid leave workers or helpers that would keep
 * the output pipes open), SIGKILL after 5 s.
 */
async function stopTree(process: Background, signal: Deno.Signal, timeoutMs = 5000): Promise<void> {
  if (process.exited) return;
  const tree = processTree(process.pid);
  process.signal(signal);
  const deadline = performance.now() + timeoutMs;
  const alive = () =>
    tree.filter((pid) => {
      try {
        return !Deno.readTextFileSync(`/proc/${pid}/stat`).includes(") Z ");
      } catch {
        return false;
      }
    });
  while (alive().length && performance.now() < deadline) await sleep(20);
  for (const pid of alive()) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await process.wait(5000);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(what: string, process: Background, predicate: () => boolean, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (process.exited) throw new Error(`${what}: the process exited\n${process.stderr.slice(-3000)}`);
    if (performance.now() > deadline) {
      throw new Error(`${what}: not ready in ${timeoutMs} ms\n${process.stderr.slice(-3000)}`);
    }
    await sleep(5);
  }
}

// ---------------------------------------------------------------- rig

type Rig = {
  topology: Topology;
  dir: string;
  hostsFile: string;
  upstreamIp: string;
  upstreamCa: string;
  nginx: Background;
};

async function writeRigFile(path: string, text: string, mode = 0o644) {
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, mode);
}

async function createRig(): Promise<Rig> {
  const topology = await createTopology("pb");
  cleanups.push(() => topology.remove());
  const dir = await Deno.makeTempDir({ prefix: `egress-bench-proxy-${RUN_ID}-` });
  await Deno.chmod(dir, 0o755);
  cleanups.push(() => Deno.remove(dir, { recursive: true }));
  const upstreamIp = topology.internetIp;
  const pki = await createTestPki(dir, [UPSTREAM_NAME], upstreamIp);
  const hostsFile = `${dir}/hosts`;
  await writeRigFile(hostsFile, `127.0.0.1 localhost\n${upstreamIp} ${UPSTREAM_NAME}\n`);

  const www = `${dir}/www`;
  await Deno.mkdir(www);
  await Deno.chmod(www, 0o755);
  // Sparse: no disk written; nginx reads zeros.
  for (const [file, size] of Object.entries(FILE_SIZES)) {
    const handle = await Deno.open(`${www}/${file}`, { create: true, write: true });
    await handle.truncate(size);
    handle.close();
    await Deno.chmod(`${www}/${file}`, 0o644);
  }
  await writeRigFile(`${dir}/leaf.key.pkcs8`, pki.keyPem, 0o600);
  const temp = `${dir}/nginx-temp`;
  await Deno.mkdir(temp);
  const conf = `${dir}/nginx.conf`;
  await writeRigFile(
    conf,
    `worker_processes 1;
worker_rlimit_nofile 16384;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${temp}/body;
  proxy_temp_path ${temp}/proxy;
  fastcgi_temp_path ${temp}/fastcgi;
  scgi_temp_path ${temp}/scgi;
  uwsgi_temp_path ${temp}/uwsgi;
  keepalive_timeout 300s;
  keepalive_requests 10000000;
  server {
    listen ${upstreamIp}:443 ssl;
    server_name ${UPSTREAM_NAME};
    ssl_certificate ${dir}/leaf.pem;
    ssl_certificate_key ${dir}/leaf.key.pkcs8;
    ssl_protocols TLSv1.2 TLSv1.3;
    root ${www};
    location = /small { default_type text/plain; return 200 "hello\\n"; }
  }
}
`,
  );
  const nginx = new Background([
    ...topology.internet.prefix(),
    "nginx",
    "-c",
    conf,
    "-e",
    `${dir}/nginx-error.log`,
  ]);
  cleanups.push(() => stopTree(nginx, "SIGTERM"));
  await waitUntil("nginx", nginx, () => listening(nginx.pid, 443), 10_000);
  return { topology, dir, hostsFile, upstreamIp, upstreamCa: pki.caPath, nginx };
}

/** A client in the client cgroup and namespace, as nobody, with the rig's /etc/hosts. */
function clientArgv(rig: Rig, argv: string[]): string[] {
  return [
    "sh",
    `${RIG}client.sh`,
    rig.topology.cgroup.fsPath,
    rig.topology.runner.path,
    rig.hostsFile,
    ...argv,
  ];
}

async function redirect(rig: Rig, action: "-A" | "-D", port: number) {
  await rig.topology.runner.exec([
    "iptables",
    "-w",
    "-t",
    "nat",
    action,
    "OUTPUT",
    "-p",
    "tcp",
    "-d",
    rig.upstreamIp,
    "--dport",
    "443",
    "-m",
    "cgroup",
    "--path",
    rig.topology.cgroup.hierarchyPath,
    "-j",
    "REDIRECT",
    "--to-ports",
    String(port),
  ]);
}

// ---------------------------------------------------------------- proxies under test

type Proxy = { pid: number; clientCa: string; readyMs: number; notes?: string[]; stop(): Promise<void> };

/** The daemon's own startup timings ("startup: <step>: done in 12.3 ms") from its operational log. */
async function startupSteps(oplog: string): Promise<string | undefined> {
  const text = await Deno.readTextFile(oplog).catch(() => "");
  const matches = [...text.matchAll(/startup: (.+?): done in ([\d.]+) ms/g)];
  const total = matches.reduce((sum, m) => sum + Number(m[2]), 0);
  // Step names carry this run's temporary paths: dropped, they only make the note unreadable.
  const steps = matches.map((m) => `${m[1].replace(/ \/\S+/g, "")} ${m[2]}`);
  return steps.length
    ? `egress startup steps (ms, ${
      total.toFixed(0)
    } in all; the rest of start-to-ready is Deno start-up and module loading): ${steps.join(", ")}`
    : undefined;
}

/** Starts a process with a raised fd limit inside the client namespace (exec chain: pid is the process). */
function spawnInClientNs(rig: Rig, argv: string[], env?: Record<string, string>): Background {
  return new Background(
    ["sh", "-c", 'ulimit -n 65536; exec "$@"', "sh", ...rig.topology.runner.prefix(), ...argv],
    { env: env ?? ENV },
  );
}

async function copyReadable(from: string, to: string) {
  await Deno.writeTextFile(to, await Deno.readTextFile(from));
  await Deno.chmod(to, 0o644);
}

async function startEgress(rig: Rig): Promise<Proxy> {
  const base = `${rig.dir}/egress`;
  await Deno.mkdir(`${base}/log`, { recursive: true });
  const stateDir = `${base}/state`;
  const ready = `${base}/ready`;
  await Deno.writeTextFile(`${base}/policy.txt`, `# proxy benchmark\n${UPSTREAM_NAME}\n`);
  const v8Log = `${base}/v8.log`;
  const argv = [
    Deno.execPath(),
    "run",
    "-A",
    ...(PROFILE_OUT ? [`--v8-flags=--prof,--no-logfile-per-isolate,--logfile=${v8Log}`] : []),
    `${ROOT}mod.ts`,
    "start",
    "--policy",
    `${base}/policy.txt`,
    "--cgroup",
    rig.topology.cgroup.hierarchyPath,
    "--state-dir",
    stateDir,
    "--log",
    `${base}/log/connections.jsonl`,
    "--control-socket",
    `${base}/egress.sock`,
    "--ready-file",
    ready,
    "--upstream-ca",
    rig.upstreamCa,
  ];
  const started = performance.now();
  const daemon = spawnInClientNs(rig, argv);
  const stop = async () => {
    await stopTree(daemon, "SIGTERM", 30_000);
    if (PROFILE_OUT) await Deno.copyFile(v8Log, PROFILE_OUT).catch(() => {});
    removeLeftoverPins(instanceName(stateDir));
    removeStaleOwnCgroups(cgroup2Mount());
  };
  cleanups.push(stop);
  const readyPid = () => {
    try {
      return Deno.readTextFileSync(ready).trim() === String(daemon.pid);
    } catch {
      return false;
    }
  };
  await waitUntil("egress start", daemon, readyPid, 60_000);
  const readyMs = performance.now() - started;
  const clientCa = `${base}/ca-for-clients.pem`;
  await copyReadable(`${stateDir}/ca.pem`, clientCa);
  const steps = await startupSteps(`${base}/log/egress.log`);
  return { pid: daemon.pid, clientCa, readyMs, stop, notes: steps ? [steps] : [] };
}

async function startMitmproxy(rig: Rig): Promise<Proxy> {
  const confdir = `${rig.dir}/mitmproxy`;
  await Deno.mkdir(confdir);
  const argv = [
    "mitmdump",
    "--mode",
    "transparent",
    "--listen-host",
    "127.0.0.1",
    "--listen-port",
    String(PORTS.mitmproxy),
    "--set",
    `confdir=${confdir}`,
    "--set",
    `ssl_verify_upstream_trusted_ca=${rig.upstreamCa}`,
    "-q",
  ];
  const started = performance.now();
  const proxy = spawnInClientNs(rig, argv);
  const stop = () => stopTree(proxy, "SIGTERM", 10_000);
  cleanups.push(stop);
  await waitUntil("mitmdump", proxy, () => listening(proxy.pid, PORTS.mitmproxy), 60_000);
  const readyMs = performance.now() - started;
  await redirect(rig, "-A", PORTS.mitmproxy);
  const clientCa = `${confdir}-ca.pem`;
  await copyReadable(`${confdir}/mitmproxy-ca-cert.pem`, clientCa);
  return {
    pid: proxy.pid,
    clientCa,
    readyMs,
    stop: async () => {
      await redirect(rig, "-D", PORTS.mitmproxy).catch(() => {});
      await stop();
    },
  };
}

async function startSquid(rig: Rig): Promise<Proxy> {
  const dir = `${rig.dir}/squid`;
  await Deno.mkdir(dir);
  // squid cannot make its own CA: a throw-away one (RSA, which every squid build handles).
  await mustRun([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
    "-days",
    "2",
    "-subj",
    `/CN=squid bench CA ${RUN_ID}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await mustRun(["/usr/lib/squid/security_file_certgen", "-c", "-s", `${dir}/ssl_db`, "-M", "16MB"]);
  // squid resolves the Host of intercepted requests to verify them: a hosts file, no DNS server.
  await Deno.writeTextFile(`${dir}/hosts`, `${rig.upstreamIp} ${UPSTREAM_NAME}\n`);
  const conf = `${dir}/squid.conf`;
  await Deno.writeTextFile(
    conf,
    `http_port 127.0.0.1:${PORTS.squidHttp}
https_port 127.0.0.1:${PORTS.squid} intercept ssl-bump tls-cert=${dir}/ca.pem tls-key=${dir}/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s ${dir}/ssl_db -M 16MB
sslcrtd_children 2 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=${rig.upstreamCa}
http_access allow all
cache deny all
cache_mem 8 MB
access_log stdio:${dir}/access.log
cache_log ${dir}/cache.log
cache_store_log none
pid_filename ${dir}/squid.pid
coredump_dir ${dir}
netdb_filename none
cache_effective_user proxy
max_filedescriptors 16384
hosts_file ${dir}/hosts
dns_nameservers 127.0.0.1
shutdown_lifetime 1 seconds
`,
  );
  await mustRun(["chown", "-R", "proxy:proxy", dir]);
  const started = performance.now();
  const proxy = spawnInClientNs(rig, ["squid", "-N", "-f", conf]);
  const stop = () => stopTree(proxy, "SIGTERM", 10_000);
  cleanups.push(stop);
  await waitUntil("squid", proxy, () => listening(proxy.pid, PORTS.squid), 60_000);
  const readyMs = performance.now() - started;
  await redirect(rig, "-A", PORTS.squid);
  return {
    pid: proxy.pid,
    clientCa: `${dir}/ca.pem`,
    readyMs,
    stop: async () => {
      await redirect(rig, "-D", PORTS.squid).catch(() => {});
      await stop();
    },
  };
}

// ---------------------------------------------------------------- measurements

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function wrk(
  rig: Rig,
  connections: number,
): Promise<{ rps: number; requests: number; errors: string }> {
  const threads = Math.min(2, connections);
  const out = await run(
    clientArgv(rig, [
      "/usr/bin/wrk",
      "-t",
      String(threads),
      "-c",
      String(connections),
      "-d",
      `${WRK_SECONDS}s`,
      "--timeout",
      "5s",
      `https://${UPSTREAM_NAME}/small`,
    ]),
    { timeoutMs: (WRK_SECONDS + 15) * 1000 },
  );
  const requests = Number(/(\d+) requests in/.exec(out.stdout)?.[1] ?? NaN);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out.stdout)?.[1] ?? NaN);
  if (out.code !== 0 || !Number.isFinite(rps)) {
    throw new Error(`wrk -c ${connections} failed (${out.code}): ${out.stdout}${out.stderr}`);
  }
  const errors = [
    /Socket errors:.*/.exec(out.stdout)?.[0],
    /Non-2xx or 3xx responses:.*/.exec(out.stdout)?.[0],
  ]
    .filter(Boolean).join("; ");
  return { rps, requests, errors };
}

async function newConnections(rig: Rig, ca: string, warmup: number, count: number) {
  const out = await run(
    clientArgv(rig, [
      "/usr/bin/python3",
      `${RIG}new_conn.py`,
      UPSTREAM_NAME,
      "443",
      ca,
      "/small",
      String(warmup),
      String(count),
      "30",
    ]),
    { timeoutMs: 45_000 },
  );
  const line = out.stdout.trim().split("\n").at(-1) ?? "";
  let parsed: { times: number[]; errors: number; firstError: string | null };
  try {
    parsed = JSON.parse(line);
  } catch {
    throw new Error(`new_conn.py printed no result (${out.code}): ${out.stdout}${out.stderr}`);
  }
  const sorted = [...parsed.times].sort((a, b) => a - b);
  return {
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    n: sorted.length,
    errors: parsed.errors,
    firstError: parsed.firstError,
  };
}

async function download(
  rig: Rig,
  ca: string,
  file: string,
  maxTime: number,
): Promise<{ mbs: number; complete: boolean; detail: string }> {
  const out = await run(
    clientArgv(rig, [
      "/usr/bin/curl",
      "-sS",
      "--max-time",
      String(maxTime),
      "--cacert",
      ca,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download} %{time_total}",
      `https://${UPSTREAM_NAME}/${file}`,
    ]),
    { timeoutMs: (maxTime + 10) * 1000 },
  );
  const [code, size, seconds] = out.stdout.trim().split(" ").map(Number);
  const complete = out.code === 0 && code === 200 && size === FILE_SIZES[file];
  const mbs = seconds > 0 ? size / 1e6 / seconds : 0;
  return {
    mbs,
    complete,
    detail: `curl exit ${out.code}, HTTP ${code}, ${size} bytes in ${seconds} s ${out.stderr.trim()}`,
  };
}

async function idleConnections(rig: Rig, ca: string, pid: number): Promise<Result["idle"]> {
  const before = rssKB(pid);
  const opener = new Background(
    clientArgv(rig, [
      "/usr/bin/python3",
      `${RIG}idle_conns.py`,
      UPSTREAM_NAME,
      "443",
      ca,
      "/small",
      String(IDLE_CONNECTIONS),
      "90",
      "60",
    ]),
    { stdin: "" },
  );
  try {
    await waitUntil("idle connections", opener, () => opener.stdout.includes('"open"'), 100_000);
  } catch (error) {
    await opener.stop("SIGKILL");
    throw error;
  }
  const report = JSON.parse(opener.stdout.trim().split("\n").at(-1)!);
  await sleep(1500); // lets lazily allocated buffers settle
  const after = rssKB(pid);
  await opener.stop("SIGTERM", 15_000);
  if (report.open === 0) throw new Error(`no idle connection opened: ${report.firstError}`);
  return {
    open: report.open,
    rssBeforeKB: before,
    rssAfterKB: after,
    perConnectionKB: (after - before) / report.open,
  };
}

async function measure(rig: Rig, name: TargetName, pid: number, ca: string): Promise<Result> {
  const result: Result = { rps: {}, wrkErrors: [], notes: [] };
  // Warm-up: certificate minted and cached, code paths hot.
  const warm = await newConnections(rig, ca, 0, 10);
  if (warm.n === 0) throw new Error(`${name}: no connection through it works: ${warm.firstError}`);
  // Idle memory first: later load (wrk, a buffered 100 MB body) grows heaps that idle connections
  // would then reuse for free.
  if (name !== "direct") {
    result.idle = await idleConnections(rig, ca, pid);
    console.error(
      `  ${name} idle: ${result.idle!.open} connections, ${result.idle!.perConnectionKB.toFixed(1)} KB each`,
    );
  }
  for (const connections of CONNECTION_COUNTS) {
    const cpuBefore = cpuMicros(pid);
    const outcome = await wrk(rig, connections);
    const cpuAfter = cpuMicros(pid);
    result.rps[connections] = outcome.rps;
    if (outcome.errors) result.wrkErrors.push(`-c ${connections}: ${outcome.errors}`);
    if (connections === 10) result.cpuUsPerRequest = (cpuAfter - cpuBefore) / outcome.requests;
    console.error(`  ${name} wrk -c ${connections}: ${outcome.rps.toFixed(0)} req/s ${outcome.errors}`);
  }
  const latency = await newConnections(rig, ca, LATENCY_WARMUP, LATENCY_COUNT);
  result.newConnection = latency;
  if (latency.errors) result.notes.push(`${latency.errors} new-connection errors (${latency.firstError})`);
  console.error(
    `  ${name} new connection: p50 ${latency.p50.toFixed(2)} ms, p99 ${latency.p99.toFixed(2)} ms`,
  );
  let best = await download(rig, ca, "big.bin", DOWNLOAD_LIMIT_S);
  // Fast paths vary most run to run: best of three (of one when slow).
  for (let i = 0; i < 2 && best.complete && best.mbs > 20; i++) {
    const again = await download(rig, ca, "big.bin", DOWNLOAD_LIMIT_S);
    if (again.complete && again.mbs > best.mbs) best = again;
  }
  if (best.complete) {
    result.throughputMBs = best.mbs;
  } else {
    // Did not finish in the time box: the rate was at most 100 MB / limit.
    result.throughputMBs = FILE_SIZES["big.bin"] / 1e6 / DOWNLOAD_LIMIT_S;
    result.throughputBound = true;
    result.throughputNote = `100 MB did not finish in ${DOWNLOAD_LIMIT_S} s (${best.detail.trim()})`;
  }
  console.error(`  ${name} download: ${best.mbs.toFixed(1)} MB/s ${result.throughputNote ?? ""}`);
  return result;
}

// ---------------------------------------------------------------- report

const f = (
  n: number | undefined,
  digits = 1,
) => (n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined, digits = 2) =>
  a === undefined || b === undefined || !b ? "—" : `${(a / b).toFixed(digits)}×`;

function table(
  results: Partial<Record<TargetName, Result>>,
): { text: string; goals: string; allPass: boolean } {
  const d = results.direct, e = results.egress, s = results.squid, m = results.mitmproxy;
  // "added" is against the direct run measured right before that proxy started (same machine load).
  const base = (r: Result) => r.baseline ?? d?.newConnection;
  const addedP50 = (r?: Result) =>
    r?.newConnection && base(r) ? r.newConnection.p50 - base(r)!.p50 : undefined;
  const addedP99 = (r?: Result) =>
    r?.newConnection && base(r) ? r.newConnection.p99 - base(r)!.p99 : undefined;
  const rows: string[][] = [];
  for (const c of CONNECTION_COUNTS) {
    rows.push([
      `keep-alive req/s, ${c} conn.`,
      f(d?.rps[c], 0),
      `${f(e?.rps[c], 0)} (${ratio(e?.rps[c], d?.rps[c])})`,
      `${f(s?.rps[c], 0)} (${ratio(s?.rps[c], d?.rps[c])})`,
      `${f(m?.rps[c], 0)} (${ratio(m?.rps[c], d?.rps[c], 3)})`,
      ratio(e?.rps[c], s?.rps[c]),
      ratio(e?.rps[c], m?.rps[c], 1),
    ]);
  }
  rows.push([
    "new connection p50, ms (added)",
    f(d?.newConnection?.p50, 2),
    `${f(e?.newConnection?.p50, 2)} (+${f(addedP50(e), 2)})`,
    `${f(s?.newConnection?.p50, 2)} (+${f(addedP50(s), 2)})`,
    `${f(m?.newConnection?.p50, 2)} (+${f(addedP50(m), 2)})`,
    ratio(addedP50(e), addedP50(s)),
    ratio(addedP50(e), addedP50(m)),
  ]);
  rows.push([
    "new connection p99, ms (added)",
    f(d?.newConnection?.p99, 2),
    `${f(e?.newConnection?.p99, 2)} (+${f(addedP99(e), 2)})`,
    `${f(s?.newConnection?.p99, 2)} (+${f(addedP99(s), 2)})`,
    `${f(m?.newConnection?.p99, 2)} (+${f(addedP99(m), 2)})`,
    ratio(addedP99(e), addedP99(s)),
    ratio(addedP99(e), addedP99(m)),
  ]);
  const tp = (r?: Result) =>
    `${r?.throughputBound ? "< " : ""}${f(r?.throughputMBs)}${r?.throughputNote ? "*" : ""}`;
  rows.push([
    "100 MB download, MB/s",
    tp(d),
    `${tp(e)} (${ratio(e?.throughputMBs, d?.throughputMBs)})`,
    `${tp(s)} (${ratio(s?.throughputMBs, d?.throughputMBs)})`,
    `${tp(m)} (${ratio(m?.throughputMBs, d?.throughputMBs)})`,
    ratio(e?.throughputMBs, s?.throughputMBs),
    ratio(e?.throughputMBs, m?.throughputMBs),
  ]);
  rows.push([
    `RSS per idle connection, KB (${IDLE_CONNECTIONS} conn.)`,
    "—",
    f(e?.idle?.perConnectionKB),
    f(s?.idle?.perConnectionKB),
    f(m?.idle?.perConnectionKB),
    ratio(e?.idle?.perConnectionKB, s?.idle?.perConnectionKB),
    ratio(e?.idle?.perConnectionKB, m?.idle?.perConnectionKB),
  ]);
  rows.push([
    "CPU µs per request (10 conn.)",
    `${f(d?.cpuUsPerRequest, 0)} (nginx)`,
    f(e?.cpuUsPerRequest, 0),
    f(s?.cpuUsPerRequest, 0),
    f(m?.cpuUsPerRequest, 0),
    ratio(e?.cpuUsPerRequest, s?.cpuUsPerRequest),
    ratio(e?.cpuUsPerRequest, m?.cpuUsPerRequest),
  ]);
  rows.push([
    "start-to-ready, ms",
    "—",
    f(e?.readyMs, 0),
    f(s?.readyMs, 0),
    f(m?.readyMs, 0),
    ratio(e?.readyMs, s?.readyMs),
    ratio(e?.readyMs, m?.readyMs),
  ]);
  const header = [
    "metric",
    "direct",
    "egress (÷direct)",
    "squid 5.7 (÷direct)",
    "mitmproxy 8.1.1 (÷direct)",
    "egress÷squid",
    "egress÷mitmproxy",
  ];
  const markdown = (cells: string[][]) => cells.map((r) => `| ${r.join(" | ")} |`).join("\n");
  const text = markdown([header, header.map(() => "---"), ...rows]);

  const goals: Array<[string, number | undefined, boolean | undefined]> = [];
  for (const c of CONNECTION_COUNTS) {
    const eR = e?.rps[c], sR = s?.rps[c], mR = m?.rps[c];
    goals.push([
      `req/s at ${c} conn. ≥ squid and ≥ 15× mitmproxy`,
      undefined,
      eR === undefined || sR === undefined || mR === undefined ? undefined : eR >= sR && eR >= 15 * mR,
    ]);
  }
  const ap = addedP50(e);
  goals.push(["added p50 per new connection ≤ 2 ms", ap, ap === undefined ? undefined : ap <= 2]);
  const tr = e?.throughputMBs !== undefined && d?.throughputMBs
    ? e.throughputMBs / d.throughputMBs
    : undefined;
  goals.push(["throughput ≥ 0.35× direct", tr, tr === undefined ? undefined : tr >= 0.35]);
  const kb = e?.idle?.perConnectionKB;
  goals.push(["≤ 60 KB per idle connection", kb, kb === undefined ? undefined : kb <= 60]);
  const rd = e?.readyMs;
  goals.push(["start-to-ready ≤ 500 ms", rd, rd === undefined ? undefined : rd <= 500]);
  const goalRows = goals.map(([goal, value, pass]) => [
    goal,
    value === undefined ? "see table" : f(value, 2),
    pass === undefined ? "not measured" : pass ? "PASS" : "FAIL",
  ]);
  const goalsText = markdown([["egress goal", "measured", "result"], ["---", "---", "---"], ...goalRows]);
  return { text, goals: goalsText, allPass: goals.every(([, , pass]) => pass === true) };
}

async function machineNotes(): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const kernel = (await Deno.readTextFile("/proc/sys/kernel/osrelease")).trim();
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  return `${navigator.hardwareConcurrency} vCPU (${cpu}), Linux ${kernel}, Deno ${Deno.version.deno}; load average at the end: ${load}`;
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  if (Deno.uid() !== 0) {
    console.error("Cannot run the proxy benchmark: it needs root (network namespaces, cgroups, iptables)");
    return 1;
  }
  for (
    const tool of [
      "/usr/bin/wrk",
      "/usr/sbin/nginx",
      "/usr/bin/mitmdump",
      "/usr/sbin/squid",
      "/usr/bin/python3",
    ]
  ) {
    try {
      Deno.statSync(tool);
    } catch {
      console.error(
        `Cannot run the proxy benchmark: ${tool} is missing (apt-get install wrk nginx-light mitmproxy squid-openssl)`,
      );
      return 1;
    }
  }
  const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") as
    | TargetName[]
    | undefined;
  const started = performance.now();
  // Module graph cached before egress's start-to-ready is timed (a first run would compile it).
  await mustRun([Deno.execPath(), "cache", "--quiet", `${ROOT}mod.ts`]).catch(() => {});
  const rig = await createRig();
  console.error(
    `rig: ${rig.topology.runner.name} (client) / ${rig.topology.internet.name} (upstream), ${rig.upstreamIp}`,
  );
  const results: Partial<Record<TargetName, Result>> = {};
  const failures: string[] = [];
  for (const name of TARGETS) {
    if (only && name !== "direct" && !only.includes(name)) continue;
    console.error(`${name}:`);
    let proxy: Proxy | undefined;
    try {
      if (name === "direct") {
        results.direct = await measure(rig, name, rig.nginx.pid, rig.upstreamCa);
        continue;
      }
      const baseline = await newConnections(rig, rig.upstreamCa, LATENCY_WARMUP, LATENCY_COUNT / 2);
      console.error(
        `  direct baseline: p50 ${baseline.p50.toFixed(2)} ms, p99 ${baseline.p99.toFixed(2)} ms`,
      );
      proxy = name === "egress"
        ? await startEgress(rig)
        : name === "squid"
        ? await startSquid(rig)
        : await startMitmproxy(rig);
      console.error(`  ${name} ready in ${proxy.readyMs.toFixed(0)} ms`);
      const result = await measure(rig, name, proxy.pid, proxy.clientCa);
      result.readyMs = proxy.readyMs;
      result.baseline = baseline;
      result.notes.push(...(proxy.notes ?? []));
      results[name] = result;
    } catch (error) {
      failures.push(`${name}: ${(error as Error).message.split("\n").slice(0, 6).join(" | ")}`);
      console.error(`  ${name} FAILED: ${(error as Error).message}`);
    } finally {
      await proxy?.stop().catch(() => {});
    }
  }
  const { text, goals, allPass } = table(results);
  const notes = TARGETS.flatMap((name) => {
    const r = results[name];
    if (!r) return [];
    return [
      ...r.wrkErrors.map((w) => `${name} wrk: ${w}`),
      ...r.notes.map((n) => `${name}: ${n}`),
      ...(r.throughputNote ? [`${name} download ${r.throughputNote}`] : []),
      ...(r.idle
        ? [`${name} idle: ${r.idle.open} open, RSS ${r.idle.rssBeforeKB} → ${r.idle.rssAfterKB} KB`]
        : []),
      ...(r.baseline
        ? [
          `${name}: direct new-connection baseline just before it: p50 ${f(r.baseline.p50, 2)} ms, p99 ${
            f(r.baseline.p99, 2)
          } ms`,
        ]
        : []),
    ];
  });
  const seconds = (performance.now() - started) / 1000;
  const machine = await machineNotes();
  console.log(`\n${text}\n\n${goals}\n`);
  for (const line of [...notes, ...failures.map((x) => `FAILED ${x}`)]) console.log(`- ${line}`);
  console.log(`\n${machine}; ${seconds.toFixed(0)} s`);
  if (WRITE_DOCS && !QUICK && !only) await writeDocs(text, goals, notes, failures, machine, seconds);
  return failures.length ? 1 : allPass ? 0 : 3;
}

async function writeDocs(
  text: string,
  goals: string,
  notes: string[],
  failures: string[],
  machine: string,
  seconds: number,
) {
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const doc = `# Benchmarks

## Transparent HTTPS proxy: egress vs squid vs mitmproxy (\`deno task bench:proxy\`)

Measured ${date} by \`scripts/bench/proxy.ts\` in ${seconds.toFixed(0)} s. Machine: ${machine}.
The client, the proxy under test and the upstream nginx share the same 2 vCPUs (with whatever else
runs on the machine), so every number includes that contention: between runs on the same day req/s
moved by up to ±30 % and download rates more; compare the columns of one run. Ratio columns are
egress ÷ the other (for the new-connection rows: of the added latency).

${text}

${goals}

${
    notes.length || failures.length
      ? [...notes, ...failures.map((x) => `FAILED ${x}`)].map((n) => `- ${n}`).join("\n") + "\n"
      : ""
  }
### Rig

- Two throw-away network namespaces from \`tests/helpers/netns.ts\` (unique names per run, a veth pair
  with 10.240.x.y/30 addresses that exist only inside them): **client** runs the clients (in a test
  cgroup, as \`nobody\`) and the proxy under test; **upstream** runs nginx-light 1.22 (1 worker, TLS 1.3,
  a throw-away EC CA, \`/small\` = 6-byte body, \`/big.bin\` = 100 MB). Everything is removed at the end,
  on errors, on SIGINT/SIGTERM and after an ${WATCHDOG_MS / 60000}-minute watchdog. The root namespace's
  firewall, routes and DNS are not touched.
- Name resolution: each client runs in a private mount namespace whose \`/etc/hosts\` maps
  \`${UPSTREAM_NAME}\` to the upstream address (\`scripts/bench/proxy_rig/client.sh\`), so wrk and curl
  send the name as SNI and Host.
- **egress**: the real daemon (\`egress start --policy … --cgroup <client cgroup> --upstream-ca …\`, policy
  \`${UPSTREAM_NAME}\`), its own steering and BPF attribution, connection log on.
- **mitmproxy 8.1.1**: \`mitmdump --mode transparent -q\` on 127.0.0.1, upstream verified with the
  upstream CA (\`ssl_verify_upstream_trusted_ca\`), default settings (bodies buffered, not streamed).
- **squid 5.7** (\`squid-openssl\`): \`https_port … intercept ssl-bump\`, \`ssl_bump peek step1\` +
  \`bump all\`, \`security_file_certgen\` cert DB, a throw-away RSA CA, no cache, \`squid -N\`.
- mitmproxy and squid get an \`iptables -t nat OUTPUT … -m cgroup --path <client cgroup> -j REDIRECT\`
  of port 443 in the client namespace (the proxy itself is outside that cgroup).

### Method

- req/s: \`wrk -t min(2,c) -c c -d ${WRK_SECONDS}s https://${UPSTREAM_NAME}/small\` (keep-alive).
- new connection: Python loop (\`proxy_rig/new_conn.py\`): TCP connect + full TLS handshake (fresh
  context, no resumption, certificate verified against the proxy's CA) + one GET with \`Connection:
  close\` read to EOF; ${LATENCY_WARMUP} warm-up + ${LATENCY_COUNT} measured; the proxy's certificate for
  the name is already cached. "added" = proxy − a direct run of ${LATENCY_COUNT / 2} connections made just
  before that proxy started (same machine load; the direct column is the run at the start).
- download: \`curl -o /dev/null\` of the 100 MB file (HTTPS, one connection), best of three (one when
  slower than 20 MB/s); \`< x*\` = not finished within ${DOWNLOAD_LIMIT_S} s, so at most 100 MB ÷ ${DOWNLOAD_LIMIT_S} s.
- RSS per idle connection: VmRSS of the proxy's process tree (\`/proc/<pid>/status\`, helpers included)
  before and 1.5 s after ${IDLE_CONNECTIONS} connections are open (each: handshake + one GET, then idle),
  difference ÷ connections. Measured first, right after a 10-connection warm-up, so heaps grown by
  the load tests do not hide the cost.
- CPU µs per request: utime+stime of the proxy's process tree (\`/proc/<pid>/stat\`) across the 10-connection
  wrk run ÷ its requests; for "direct" the same for nginx.
- start-to-ready: egress from spawn to its \`--ready-file\` holding its pid (fresh state dir: a new CA);
  squid and mitmproxy from spawn to the port listening (mitmproxy creates its CA on that start, squid
  gets one). Module graph already cached.
- Options: \`--quick\` (2 s wrk, 50 latency samples, 200 idle connections; docs not written),
  \`--only=egress,squid\` (direct plus the named proxies), \`--no-docs\`, \`--profile=FILE\` (egress under
  V8's \`--prof\`; read it with \`node --prof-process FILE\`; it covers the supervisor process only, not
  the proxy worker it spawns).

### Where egress's costs are (profiled 2026-12-01, not re-measured by the script)

- **Idle memory (~350 KB per connection)** is mostly the client-side TLS: egress terminates the
  client's TLS with Deno's \`node:tls\` \`TLSSocket\` over a JS \`Duplex\` (\`src/proxy/tls.ts\`,
  \`duplexOverConn\`). In isolation (500 connections, one process) that costs ~195 KB per connection
  with 16 KB read buffers and ~235 KB with 64 KB ones (JS heap ~19 KB, the rest native); the same
  \`TLSSocket\` over a native \`net.Socket\` ~160 KB; Deno's own \`Deno.listenTls\` server ~30 KB. On top
  come three 64 KB read buffers per intercepted connection (raw client \`DenoConnStream\`, the duplex
  pump, the upstream \`DenoConnStream\`): 64 → 16 KB measured 357 → 244 KB per connection in this
  bench. The 60 KB goal needs a different client-side TLS termination, not tuning.
- **Keep-alive requests**: in a V8 profile of the proxy under load, ~35–41 % of its CPU samples are in
  \`send()\`, mostly TLS records written to the client through the duplex (\`duplexOverConn\` write),
  each a separate syscall and TCP segment; ~5 % in \`recv()\`, ~18–24 % in JavaScript (node stream
  machinery, HTTP parsing, policy, log), ~18 % in Deno's native code (TLS crypto), ~4–5 % GC.
  Writing the response head and the body bytes that arrived with it in one write
  (\`src/proxy/http_session.ts\`: one TLS record and one segment instead of two per small response)
  raised 10-connection req/s from ~8.6–9.8 k to ~15.5 k on this rig.
- **Start-to-ready (~400–900 ms, load-dependent)**: the daemon's own steps take ~270–350 ms, of which
  creating the RSA-2048 CA is ~130–150 ms (new on every start: the key is deleted at shutdown; RSA key
  generation time varies widely) and starting the proxy worker process ~100 ms; the rest is Deno
  start-up and loading the module graph of \`mod.ts\`.
`;
  await Deno.writeTextFile(`${ROOT}docs/benchmarks.md`, doc);
  // The repository's formatter lays out the table and wraps the prose (deno fmt --check stays green).
  await run(
    [Deno.execPath(), "fmt", "--quiet", "--config", `${ROOT}deno.json`, `${ROOT}docs/benchmarks.md`],
    { env: ENV },
  ).catch(() => {});
  console.error("wrote docs/benchmarks.md");
}

const watchdog = setTimeout(() => {
  console.error(`watchdog: the benchmark took longer than ${WATCHDOG_MS / 60000} minutes`);
  cleanupAll().finally(() => Deno.exit(1));
}, WATCHDOG_MS);
let code = 1;
try {
  code = await main();
} catch (error) {
  console.error(`Cannot run the proxy benchmark: ${(error as Error).message}`);
} finally {
  clearTimeout(watchdog);
  await cleanupAll();
}
console.error(`done (exit ${code})`);
Deno.exit(code);
