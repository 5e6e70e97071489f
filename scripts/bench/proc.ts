// Benchmark: per-connection /proc cost (describeProcess on a live process, with and without the
// trusted-context ancestry walk) and conntrack lookup latency by reply tuple, each next to a
// baseline measured in the same run (one readlink, one stat read, one trivial FFI call).
// Bounded: every measurement stops after MAX_ITERATIONS or MAX_MS, whichever comes first.
//
//   deno run -A scripts/bench/proc.ts [--json]
//
// The conntrack part needs root: it creates a network namespace egbench-<pid>, REDIRECTs
// 127.0.0.2:80 to a listener inside it (nothing outside the namespace changes), re-runs this
// script inside it with --inner, and removes the namespace afterwards.

import { libc } from "../../ffi/libc.ts";
import { ConntrackClient } from "../../src/kernel/conntrack.ts";
import { ProcessDescriber } from "../../src/proc/process_info.ts";

const MAX_ITERATIONS = 5000;
const MAX_MS = 1500;

type Stats = { name: string; n: number; p50: number; p99: number; mean: number };

async function measure(name: string, fn: () => unknown | Promise<unknown>): Promise<Stats> {
  for (let i = 0; i < 50; i++) await fn(); // warm-up (JIT, page cache, socket)
  const samples: number[] = [];
  const end = performance.now() + MAX_MS;
  while (samples.length < MAX_ITERATIONS && performance.now() < end) {
    const t0 = performance.now();
    await fn();
    samples.push((performance.now() - t0) * 1000);
  }
  samples.sort((a, b) => a - b);
  const pick = (q: number) =>
    Math.round(samples[Math.min(samples.length - 1, Math.floor(samples.length * q))] * 10) / 10;
  const mean = Math.round(samples.reduce((s, x) => s + x, 0) / samples.length * 10) / 10;
  return { name, n: samples.length, p50: pick(0.5), p99: pick(0.99), mean };
}

async function inner(): Promise<Stats[]> {
  // Inside the bench namespace: one REDIRECTed connection, then lookups of its reply tuple.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 15080 });
  const client = await Deno.connect({ hostname: "127.0.0.2", port: 80 });
  const accepted = await listener.accept();
  const local = accepted.localAddr as Deno.NetAddr, peer = accepted.remoteAddr as Deno.NetAddr;
  const conntrack = new ConntrackClient();
  const reply = {
    protocol: "tcp" as const,
    srcIp: local.hostname,
    srcPort: local.port,
    dstIp: peer.hostname,
    dstPort: peer.port,
  };
  const first = await conntrack.lookupByReply(reply);
  if (!first.found || first.original.dstIp !== "127.0.0.2") {
    throw new Error(`bench setup: lookup failed: ${JSON.stringify(first)}`);
  }
  const results = [
    await measure("baseline: FFI getpid()", () => libc().getpid()),
    await measure("conntrack lookup by reply tuple (hit)", () => conntrack.lookupByReply(reply)),
    await measure("conntrack lookup (miss, ENOENT)", () => conntrack.lookupByReply({ ...reply, dstPort: 1 })),
  ];
  conntrack.close();
  client.close();
  accepted.close();
  listener.close();
  return results;
}

async function run(cmd: string[], check = true): Promise<string> {
  const out = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (check && !out.success) {
    throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function conntrackInNamespace(): Promise<Stats[] | string> {
  if (Deno.uid() !== 0) return "skipped: needs root (creates a network namespace)";
  const netns = `egbench-${Deno.pid}`;
  await run(["ip", "netns", "add", netns]);
  try {
    await run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
    await run([
      "ip",
      "netns",
      "exec",
      netns,
      "iptables",
      "-t",
      "nat",
      "-A",
      "OUTPUT",
      "-p",
      "tcp",
      "-d",
      "127.0.0.2",
      "--dport",
      "80",
      "-j",
      "REDIRECT",
      "--to-ports",
      "15080",
    ]);
    const text = await run([
      "ip",
      "netns",
      "exec",
      netns,
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--inner",
    ]);
    return JSON.parse(text.trim().split("\n").at(-1)!) as Stats[];
  } finally {
    await run(["ip", "netns", "del", netns], false);
  }
}

async function procBench(): Promise<Stats[]> {
  // A live process tree: a copied shell standing in for Runner.Worker, a step process under it.
  const dir = Deno.makeTempDirSync({ prefix: "egress-bench-" });
  const worker = `${Deno.realPathSync(dir)}/Runner.Worker`;
  Deno.copyFileSync("/bin/bash", worker);
  Deno.chmodSync(worker, 0o755);
  const tree = new Deno.Command(worker, {
    args: [
      "-c",
      "GITHUB_ACTION=bench GITHUB_ACTION_REPOSITORY=o/a /bin/sh -c '/bin/sleep 30 & echo $!; wait'; true",
    ],
    stdout: "piped",
  }).spawn();
  const reader = tree.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  const leaf = Number(text.trim());
  const describer = new ProcessDescriber({ runner: false });
  const ownCgroup = describer.proc.read(leaf)?.cgroup ?? "/";
  const runnerDescriber = new ProcessDescriber({ runner: { runnerCgroup: ownCgroup, runnerWorker: worker } });
  const check = await runnerDescriber.describe(leaf);
  if (check.step !== "bench") {
    throw new Error(`bench setup: trusted context not found: ${JSON.stringify(check)}`);
  }
  try {
    return [
      await measure(
        "baseline: Deno.readLinkSync(/proc/<pid>/exe)",
        () => Deno.readLinkSync(`/proc/${leaf}/exe`),
      ),
      await measure("baseline: read /proc/<pid>/stat", () => Deno.readTextFileSync(`/proc/${leaf}/stat`)),
      await measure("describeProcess (no runner context)", () => describer.describe(leaf)),
      await measure("describeProcess (runner context, walk depth 3)", () => runnerDescriber.describe(leaf)),
    ];
  } finally {
    try {
      Deno.kill(leaf, "SIGKILL");
    } catch { /* gone */ }
    tree.kill("SIGKILL");
    await tree.status;
    await tree.stdout.cancel().catch(() => undefined);
    Deno.removeSync(dir, { recursive: true });
  }
}

if (Deno.args.includes("--inner")) {
  console.log(JSON.stringify(await inner()));
  Deno.exit(0);
}

const proc = await procBench();
const conntrack = await conntrackInNamespace();
if (Deno.args.includes("--json")) {
  console.log(JSON.stringify({ proc, conntrack }, null, 2));
} else {
  const row = (s: Stats) =>
    `  ${s.name.padEnd(48)} p50 ${String(s.p50).padStart(7)} µs  p99 ${String(s.p99).padStart(7)} µs  mean ${
      String(s.mean).padStart(7)
    } µs  (n=${s.n})`;
  console.log("/proc per connection:");
  proc.forEach((s) => console.log(row(s)));
  console.log("conntrack (ctnetlink, in a bench network namespace):");
  if (typeof conntrack === "string") console.log(`  ${conntrack}`);
  else conntrack.forEach((s) => console.log(row(s)));
}
