// Benchmark: time from the start of the action's `pre` step to enforcing (pre exits once the
// daemon's ready file exists), on a simulated runner (tests/action/sim_runner.ts: fake
// Runner.Worker, test cgroup, test network namespace, every system path in a temporary root).
//   warm: Deno already in the tool cache and the daemon's modules cached (goal ≤ 1 s)
//   cold: what an empty tool cache adds: npm ci of the pinned Deno (empty npm cache) and filling
//         an empty Deno module cache for the daemon, both measured outside the test namespace
//         (it has no route to the registry), plus a warm start
// Each run is followed by a shutdown over the control socket. Needs root.
//
//   deno run -A scripts/bench/action.ts [--warm N] [--no-cold] [--json]

import { sendControlCommand } from "../../src/control/client.ts";
import { findNode } from "../../src/runner/runc_wrapper.ts";
import { createTopology } from "../../tests/helpers/netns.ts";
import { createSimulatedRunner, output } from "../../tests/action/sim_runner.ts";
import { FakeRunner } from "../../tests/runner/fake_runner.ts";

const repo = new URL("../../", import.meta.url).pathname;
const args = Deno.args;
const warmRuns = Number(args[args.indexOf("--warm") + 1]) || 5;
const cold = !args.includes("--no-cold");
const json = args.includes("--json");

if (Deno.uid() !== 0) {
  console.error("bench:action needs root (network namespace, cgroup, BPF)");
  Deno.exit(1);
}
const node = findNode("/usr/local/bin:/usr/bin:/bin");
if (!node) {
  console.error("bench:action needs node");
  Deno.exit(1);
}

async function waitGone(path: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      await Deno.lstat(path);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function timed(argv: string[], env: Record<string, string>, cwd?: string): Promise<number> {
  const started = performance.now();
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    env,
    cwd,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`${argv.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  return performance.now() - started;
}

/** The two cold-only costs, each from empty caches. */
async function coldExtras(): Promise<{ denoInstallMs: number; moduleCacheMs: number }> {
  const dir = await Deno.makeTempDir({ prefix: "egress-bench-cold-" });
  try {
    await Deno.mkdir(`${dir}/install`);
    for (const file of ["package.json", "package-lock.json"]) {
      await Deno.copyFile(`${repo}action/deno/${file}`, `${dir}/install/${file}`);
    }
    // This machine's CA settings (a TLS-inspecting proxy may sit in front of the registry).
    const tls: Record<string, string> = {};
    for (const key of ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"]) {
      const value = Deno.env.get(key);
      if (value) tls[key] = value;
    }
    if (tls.SSL_CERT_FILE) tls.DENO_CERT = tls.SSL_CERT_FILE;
    const base = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: `${dir}/home`, ...tls };
    const denoInstallMs = await timed(
      ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
      base,
      `${dir}/install`,
    );
    const arch = Deno.build.arch === "x86_64" ? "x64" : "arm64";
    const deno = `${dir}/install/node_modules/@deno/linux-${arch}-glibc/deno`;
    const moduleCacheMs = await timed(
      [deno, "cache", "--config", `${repo}deno.json`, `${repo}mod.ts`],
      { ...base, DENO_DIR: `${dir}/deno-dir`, DENO_NO_UPDATE_CHECK: "1" },
    );
    return { denoInstallMs, moduleCacheMs };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function once(
  runner: FakeRunner,
  netns: string,
  warm: boolean,
): Promise<{ totalMs: number; reportedMs: number }> {
  const sim = await createSimulatedRunner(runner, node!, { warm });
  try {
    const started = performance.now();
    const pre = await output(runner.step([node!, `${repo}action/dist/pre.cjs`], { env: sim.env, netns }));
    const totalMs = performance.now() - started;
    if (pre.code !== 0) throw new Error(`pre failed:\n${pre.stdout}\n${pre.stderr}`);
    const reported = Number(/enforcing in (\d+) ms/.exec(pre.stdout)?.[1]);
    const socket = `${sim.root}/run/egress.sock`;
    await sendControlCommand(socket, "shutdown");
    await waitGone(socket, 15_000);
    return { totalMs, reportedMs: reported };
  } finally {
    await sim.remove();
  }
}

const topology = await createTopology("bact");
const runner = await FakeRunner.create("bact");
const results: Array<{ name: string; totalMs: number; reportedMs: number }> = [];
try {
  await once(runner, topology.runner.path, true); // first run warms the page cache
  for (let i = 0; i < warmRuns; i++) {
    results.push({ name: "warm", ...await once(runner, topology.runner.path, true) });
  }
} finally {
  await runner.remove();
  await topology.remove();
}

const extras = cold ? await coldExtras() : undefined;
const warm = results.filter((r) => r.name === "warm").map((r) => r.totalMs).sort((a, b) => a - b);
const median = warm[Math.floor(warm.length / 2)];
const summary = {
  warm_runs: warm.length,
  warm_median_ms: Math.round(median),
  warm_max_ms: Math.round(warm.at(-1)!),
  cold_deno_install_ms: extras ? Math.round(extras.denoInstallMs) : undefined,
  cold_module_cache_ms: extras ? Math.round(extras.moduleCacheMs) : undefined,
  cold_ms: extras ? Math.round(extras.denoInstallMs + extras.moduleCacheMs + median) : undefined,
  goal_warm_ms: 1000,
};
if (json) console.log(JSON.stringify({ results, summary }));
else {
  for (const r of results) {
    console.log(
      `${r.name.padEnd(5)} pre → enforcing ${
        r.totalMs.toFixed(0).padStart(6)
      } ms (pre's own count ${r.reportedMs} ms)`,
    );
  }
  console.log(`warm median ${summary.warm_median_ms} ms, max ${summary.warm_max_ms} ms (goal ≤ 1000 ms)`);
  if (extras) {
    console.log(
      `cold ≈ ${summary.cold_ms} ms = Deno install ${summary.cold_deno_install_ms} ms + module cache ${summary.cold_module_cache_ms} ms + warm start`,
    );
  }
}
