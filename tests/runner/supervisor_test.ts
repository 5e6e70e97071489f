import assert from "node:assert/strict";
import {
  restartDelayMs,
  RestartTracker,
  spawnWorkerProcess,
  Supervisor,
  type SupervisorState,
} from "../../src/runner/supervisor.ts";

Deno.test("restart delays: 0.25 s doubling, capped at 8 s", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => restartDelayMs(n)), [
    250,
    500,
    1000,
    2000,
    4000,
    8000,
    8000,
    8000,
  ]);
});

Deno.test("restart tracker: failures before ready or within 30 s count; 60 s of health resets", () => {
  let now = 0;
  const tracker = new RestartTracker(() => now);
  tracker.started();
  assert.deepEqual(tracker.exited(), { action: "restart", delayMs: 250, failure: true }, "died before ready");
  tracker.started();
  tracker.ready();
  now += 10_000;
  assert.deepEqual(
    tracker.exited(),
    { action: "restart", delayMs: 500, failure: true },
    "died 10 s after ready",
  );
  tracker.started();
  tracker.ready();
  now += 45_000;
  assert.deepEqual(
    tracker.exited(),
    { action: "restart", delayMs: 500, failure: false },
    "45 s: no failure, no reset",
  );
  tracker.started();
  tracker.ready();
  now += 61_000;
  assert.deepEqual(
    tracker.exited(),
    { action: "restart", delayMs: 250, failure: false },
    "healthy 61 s: reset",
  );
  assert.equal(tracker.failures, 0);
  for (let i = 1; i <= 4; i++) {
    tracker.started();
    const next = tracker.exited();
    assert.equal(next.action, "restart");
  }
  tracker.started();
  assert.deepEqual(tracker.exited(), { action: "give-up" }, "fifth consecutive failure");
});

function shellWorker(dir: string, script: string) {
  return () =>
    spawnWorkerProcess(
      new Deno.Command("/bin/sh", { args: ["-c", script, "worker", `${dir}/ready`, `${dir}/starts`] }),
      `${dir}/ready`,
    );
}

Deno.test("supervisor: a crashing worker is restarted with backoff, then degraded (5 failures)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-supervisor-" });
  const states: SupervisorState[] = [];
  const logs: string[] = [];
  try {
    // Becomes ready once, then every later start dies at once.
    const script =
      `echo x >> "$2"; if [ "$(wc -l < "$2")" -eq 1 ]; then touch "$1"; sleep 0.2; exit 3; fi; exit 4`;
    const supervisor = new Supervisor({
      spawn: shellWorker(dir, script),
      log: (level, message) => logs.push(`${level} ${message}`),
      baseDelayMs: 10,
      onStateChange: (state) => states.push(state),
    });
    await supervisor.start();
    assert.equal(supervisor.state, "running");
    const deadline = Date.now() + 10_000;
    const stateOf = (s: Supervisor): SupervisorState => s.state;
    while (stateOf(supervisor) !== "degraded" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(stateOf(supervisor), "degraded");
    assert.equal(supervisor.restarts, 4, "four restarts after the first run, the fifth failure gives up");
    assert.equal((await Deno.readTextFile(`${dir}/starts`)).trim().split("\n").length, 5);
    assert.deepEqual(
      logs.filter((l) => l.startsWith("warn")).map((l) => Number(/in (\d+) ms/.exec(l)?.[1])),
      [10, 20, 40, 80],
    );
    assert.match(logs.at(-1)!, /^error worker failed 5 times in a row \(last exit code 4\): degraded/);
    await supervisor.stop();
    assert.equal(supervisor.state, "stopped");
    assert.ok(states.includes("restarting"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("supervisor: restarted worker becomes running again; stop ends it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-supervisor-" });
  try {
    // The first run dies after ready; the second stays up until stopped.
    const script =
      `echo x >> "$2"; touch "$1"; if [ "$(wc -l < "$2")" -eq 1 ]; then exit 1; fi; exec sleep 30`;
    const supervisor = new Supervisor({
      spawn: shellWorker(dir, script),
      log: () => {},
      baseDelayMs: 10,
      stopGraceMs: 2000,
    });
    await supervisor.start();
    const deadline = Date.now() + 5000;
    while (supervisor.restarts < 1 || supervisor.state !== "running") {
      assert.ok(Date.now() < deadline, `state ${supervisor.state}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const started = Date.now();
    await supervisor.stop();
    assert.ok(Date.now() - started < 1500, "SIGTERM ended the worker");
    assert.equal(supervisor.state, "stopped");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("supervisor: a worker that dies before its first ready fails start", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-supervisor-" });
  try {
    const supervisor = new Supervisor({ spawn: shellWorker(dir, "exit 7"), log: () => {} });
    await assert.rejects(supervisor.start(), /exited with code 7 before it was ready/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
