// Trusted step context: pure tests on a fake /proc tree, and a real process tree (a copied shell
// standing in for Runner.Worker) in a cgroup this test creates and always removes.

import assert from "node:assert/strict";
import {
  MAX_ANCESTRY,
  type RunnerConstants,
  runnerConstants,
  runnerSelfCheck,
  trustedContext,
} from "../../src/proc/github_context.ts";
import { ProcReader } from "../../src/proc/process.ts";
import { needsRoot, testWhen, unmet } from "../helpers/requirements.ts";
import { type FakeProcess, makeFakeProc } from "./fake_proc.ts";

const WORKER = "/opt/runner/bin/Runner.Worker";
const RUNNER_CG = "/system.slice/hosted-compute-agent.service";
const constants: RunnerConstants = { runnerCgroup: RUNNER_CG, runnerWorker: WORKER };
const context = { GITHUB_ACTION: "__actions_checkout", GITHUB_ACTION_REPOSITORY: "actions/checkout" };
const forged = { GITHUB_ACTION: "forged", GITHUB_ACTION_REPOSITORY: "evil/forged" };

function fakeTree(): FakeProcess[] {
  const p = (pid: number, ppid: number, exe: string, extra: Partial<FakeProcess> = {}): FakeProcess => ({
    pid,
    ppid,
    exe,
    cgroup: RUNNER_CG,
    startTime: pid,
    ...extra,
  });
  const tree = [
    p(1, 0, "/sbin/init", { cgroup: "/" }),
    p(10, 1, "/usr/bin/agent"),
    p(100, 10, WORKER),
    p(200, 100, "/usr/bin/node", { env: context }), // a JS action: top process itself
    p(300, 200, "/usr/bin/curl", { env: forged }), // grandchild with forged env
    p(310, 100, "/bin/bash", { env: { GITHUB_ACTION: "run_step", GITHUB_ACTION_REPOSITORY: "" } }),
    p(320, 310, "/usr/bin/git", { env: forged }),
    p(400, 1, "/usr/bin/daemon", { env: context }), // re-parented daemon
    p(500, 10, "/usr/bin/env", { env: forged }), // forged env, beside the worker
    p(600, 10, `${WORKER} (deleted)`),
    p(610, 600, "/bin/sh", { env: context }),
    p(700, 100, "/bin/sh", { env: context, cgroup: "/system.slice/docker-x.scope" }), // other cgroup
    p(800, 100, "/bin/sh", { env: context, startTime: 50 }), // parent (100) younger than child? no: 50 < 100
  ];
  // A chain deeper than the walk limit below the worker.
  let parent = 200;
  for (let i = 0; i < MAX_ANCESTRY + 2; i++) {
    tree.push(p(1000 + i, parent, "/bin/sh", { env: forged, startTime: 1000 + i }));
    parent = 1000 + i;
  }
  return tree;
}

Deno.test("trusted context on a fake tree: who gets step and action", () => {
  const root = makeFakeProc(fakeTree());
  try {
    const proc = new ProcReader(root);
    const ctx = (pid: number) => trustedContext(pid, proc, constants);
    assert.deepEqual(ctx(200), { step: "__actions_checkout", action: "actions/checkout" });
    assert.deepEqual(
      ctx(300),
      { step: "__actions_checkout", action: "actions/checkout" },
      "env of the top only",
    );
    assert.deepEqual(ctx(310), { step: "run_step" }, "run: step, empty action is dropped");
    assert.deepEqual(ctx(320), { step: "run_step" });
    assert.deepEqual(ctx(100), {}, "Runner.Worker itself");
    assert.deepEqual(ctx(400), {}, "re-parented daemon");
    assert.deepEqual(ctx(500), {}, "forged env outside the tree");
    assert.deepEqual(ctx(610), {}, "a (deleted) Runner.Worker never matches");
    assert.deepEqual(ctx(700), {}, "outside the runner cgroup");
    assert.deepEqual(ctx(800), {}, "process older than its parent: the parent pid was reused");
    assert.deepEqual(ctx(1000 + MAX_ANCESTRY - 3), {
      step: "__actions_checkout",
      action: "actions/checkout",
    });
    assert.deepEqual(ctx(1000 + MAX_ANCESTRY + 1), {}, "Runner.Worker beyond 64 entries is not searched");
    assert.deepEqual(ctx(99999), {}, "no such process");
    assert.deepEqual(trustedContext(200, proc, { ...constants, runnerWorker: "/other/Runner.Worker" }), {});
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("self-check on a fake tree: found only with Runner.Worker in the runner cgroup", () => {
  const tree = fakeTree();
  const root = makeFakeProc(tree);
  try {
    const proc = new ProcReader(root);
    const deep = 1000 + MAX_ANCESTRY + 1;
    const found = runnerSelfCheck(proc, constants, deep);
    assert.ok(found.ok, "no fixed depth for the self-check");
    assert.equal(found.workerPid, 100);
    const outside = runnerSelfCheck(proc, constants, 400);
    assert.equal(outside.ok, false);
    assert.match(
      (outside as { error: string }).error,
      /^Cannot run in runner mode: .*ancestry seen: 400 \/usr\/bin\/daemon/,
    );
    const wrongCgroup = runnerSelfCheck(proc, { ...constants, runnerCgroup: "/elsewhere" }, 200);
    assert.equal(wrongCgroup.ok, false);
    assert.equal(runnerSelfCheck(proc, constants, 100).ok, false, "the worker itself has no worker ancestor");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("runner constants: defaults and test overrides", () => {
  assert.deepEqual(runnerConstants(() => undefined), {
    runnerCgroup: "/system.slice/hosted-compute-agent.service",
    runnerWorker: "/home/runner/actions-runner/cached/bin/Runner.Worker",
  });
  const env: Record<string, string> = {
    EGRESS_TEST_RUNNER_WORKER: "/tmp/w",
    EGRESS_TEST_RUNNER_CGROUP: "/t",
  };
  assert.deepEqual(runnerConstants((k) => env[k]), { runnerCgroup: "/t", runnerWorker: "/tmp/w" });
});

// ---------------------------------------------------------------------------------------------
// Real process tree

function cgroup2Mount(): string | undefined {
  try {
    for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
      const [before, after] = line.split(" - ");
      if (after?.startsWith("cgroup2 ")) return before.split(" ")[4];
    }
  } catch { /* unreadable */ }
  return undefined;
}

const mount = cgroup2Mount();
const realReason = unmet([
  [needsRoot() === undefined, "needs root (creates a cgroup)"],
  [mount !== undefined, "needs a cgroup2 mount"],
]);

type Tree = { top: number; grandchild: number; daemon: number; forged: number };

async function readLines(
  stream: ReadableStream<Uint8Array>,
  want: string[],
): Promise<Record<string, number>> {
  const found: Record<string, number> = {};
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = setTimeout(() => reader.cancel(), 10_000);
  try {
    while (want.some((key) => !(key in found))) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      for (const match of text.matchAll(/(\w+)=(\d+)\n/g)) found[match[1]] = Number(match[2]);
    }
  } finally {
    clearTimeout(deadline);
    reader.releaseLock();
  }
  for (const key of want) if (!(key in found)) throw new Error(`fake runner tree did not report ${key}`);
  return found;
}

testWhen(realReason, "trusted context on a real process tree under a fake Runner.Worker", async () => {
  const name = `egress-ctx-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const cgroupDir = `${mount}/${name}`;
  const dir = Deno.makeTempDirSync({ prefix: "egress-runner-" });
  const worker = `${Deno.realPathSync(dir)}/Runner.Worker`;
  Deno.copyFileSync("/bin/bash", worker);
  Deno.chmodSync(worker, 0o755);
  Deno.mkdirSync(cgroupDir);
  const children: Deno.ChildProcess[] = [];
  try {
    const real: RunnerConstants = { runnerCgroup: `/${name}`, runnerWorker: worker };
    const stepScript = `${worker} -c '` +
      `GITHUB_ACTION=step_1 GITHUB_ACTION_REPOSITORY=octo/js-action /bin/sh -c "` +
      `GITHUB_ACTION=forged GITHUB_ACTION_REPOSITORY=evil/x /bin/sleep 60 & echo grandchild=\\$!; ` +
      `(/bin/sleep 61 & echo daemon=\\$!); echo top=\\$\\$; wait"; true'`;
    const treeProcess = new Deno.Command("/bin/sh", {
      args: ["-c", `echo $$ > ${cgroupDir}/cgroup.procs && exec ${stepScript}`],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    children.push(treeProcess);
    const forgedProcess = new Deno.Command("/bin/sh", {
      args: [
        "-c",
        `echo $$ > ${cgroupDir}/cgroup.procs && echo forged=$$ && exec env GITHUB_ACTION=forged GITHUB_ACTION_REPOSITORY=evil/x /bin/sleep 62`,
      ],
      stdout: "piped",
    }).spawn();
    children.push(forgedProcess);
    const tree = await readLines(treeProcess.stdout, ["top", "grandchild", "daemon"]) as unknown as Tree;
    tree.forged = (await readLines(forgedProcess.stdout, ["forged"])).forged;
    // wait until the daemon is re-parented and `env` has exec'd sleep
    const proc = new ProcReader();
    for (let i = 0; i < 100; i++) {
      const daemon = proc.read(tree.daemon), forgedNow = proc.read(tree.forged);
      if (daemon && daemon.ppid !== tree.top && forgedNow?.exe?.endsWith("sleep")) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(proc.read(tree.top)?.ppid, treeProcess.pid, "the step's top process is the worker's child");
    assert.equal(proc.read(tree.top)?.cgroup, `/${name}`);

    const ctx = (pid: number) => trustedContext(pid, proc, real);
    assert.deepEqual(ctx(tree.top), { step: "step_1", action: "octo/js-action" });
    assert.deepEqual(ctx(tree.grandchild), { step: "step_1", action: "octo/js-action" });
    assert.deepEqual(ctx(tree.daemon), {}, "re-parented daemon");
    assert.deepEqual(ctx(tree.forged), {}, "forged env outside the tree");
    assert.deepEqual(ctx(treeProcess.pid), {}, "Runner.Worker itself");
    assert.deepEqual(
      trustedContext(tree.grandchild, proc, { ...real, runnerCgroup: "/" }),
      {},
      "wrong cgroup",
    );

    // --runner self-check from a Deno process started by the fake worker, and from outside it.
    const probe = new URL("./fixtures/self_check_probe.ts", import.meta.url).pathname;
    const env = {
      EGRESS_TEST_RUNNER_WORKER: worker,
      EGRESS_TEST_RUNNER_CGROUP: `/${name}`,
      DENO_NO_UPDATE_CHECK: "1",
    };
    const inside = await new Deno.Command("/bin/sh", {
      args: [
        "-c",
        `echo $$ > ${cgroupDir}/cgroup.procs && exec ${worker} -c '"$0" run -A "$1"; true' "$0" "$1"`,
        Deno.execPath(),
        probe,
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const insideResult = JSON.parse(new TextDecoder().decode(inside.stdout));
    assert.equal(
      insideResult.ok,
      true,
      new TextDecoder().decode(inside.stderr) + JSON.stringify(insideResult),
    );
    const outside = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", probe],
      env,
      stdout: "piped",
    }).output();
    const outsideResult = JSON.parse(new TextDecoder().decode(outside.stdout));
    assert.equal(outsideResult.ok, false);
    assert.match(
      outsideResult.error,
      /Cannot run in runner mode: .*Runner\.Worker in cgroup \/egress-ctx-.*ancestry seen: \d+ /,
    );
    assert.ok(outsideResult.pids.includes(Deno.pid), "the ancestry listed includes this test process");
  } finally {
    try {
      Deno.writeTextFileSync(`${cgroupDir}/cgroup.kill`, "1");
    } catch (error) {
      console.error(`cgroup.kill: ${(error as Error).message}`);
    }
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await child.stdout.cancel().catch(() => undefined);
    }
    for (let i = 0; i < 100; i++) {
      try {
        Deno.removeSync(cgroupDir);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    Deno.removeSync(dir, { recursive: true });
  }
});
