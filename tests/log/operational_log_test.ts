import assert from "node:assert/strict";
import { formatOperationalLine, OperationalLog } from "../../src/log/operational_log.ts";
import { createScrubber } from "../../src/log/scrub.ts";

const at = new Date("2026-02-18T10:30:45.123Z");

Deno.test("operational line format, escaping and scrubbing", () => {
  assert.equal(
    formatOperationalLine("INFO", "policy loaded: 14 rules (5 built-in), enforce", at),
    "2026-02-18T10:30:45.123Z INFO policy loaded: 14 rules (5 built-in), enforce",
  );
  assert.equal(
    formatOperationalLine("WARN", "a\nb\tc\u0007", at),
    "2026-02-18T10:30:45.123Z WARN a\\nb\\tc\\x07",
  );
  const s = createScrubber({ secrets: ["oidc-request-token"] });
  assert.equal(
    formatOperationalLine("ERROR", "upstream said oidc-request-token and ghp_" + "z".repeat(36), at, s),
    "2026-02-18T10:30:45.123Z ERROR upstream said *** and ***",
  );
});

Deno.test("operational log: file in append mode, DEBUG only when enabled, stderr optional", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-oplog-test-" });
  try {
    const path = `${dir}/log/egress.log`;
    const quiet = new OperationalLog({ path, stderr: false, debug: false, now: () => at });
    quiet.debug("hidden");
    quiet.info("started");
    quiet.warn("careful");
    quiet.close();
    quiet.close();
    const loud = new OperationalLog({
      path,
      stderr: false,
      debug: true,
      now: () => at,
      scrubber: createScrubber({ secrets: ["tok123"] }),
    });
    loud.debug("shown tok123");
    loud.error("Cannot do X: reason");
    loud.close();
    assert.equal(
      await Deno.readTextFile(path),
      [
        "2026-02-18T10:30:45.123Z INFO started",
        "2026-02-18T10:30:45.123Z WARN careful",
        "2026-02-18T10:30:45.123Z DEBUG shown ***",
        "2026-02-18T10:30:45.123Z ERROR Cannot do X: reason",
        "",
      ].join("\n"),
    );
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
    assert.throws(() => new OperationalLog({ path: `${path}/nested` }), /Cannot open operational log/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("operational log: EGRESS_DEBUG=1 enables DEBUG, and lines reach stderr", async () => {
  const script = `
    import { OperationalLog } from ${
    JSON.stringify(new URL("../../src/log/operational_log.ts", import.meta.url).href)
  };
    const log = new OperationalLog();
    log.debug("dbg line");
    log.info("info line");
  `;
  const run = async (env: Record<string, string>) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", script],
      env: { DENO_NO_UPDATE_CHECK: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stderr);
  };
  const withDebug = await run({ EGRESS_DEBUG: "1" });
  assert.match(withDebug, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG dbg line\n\S+ INFO info line\n$/);
  const without = await run({ EGRESS_DEBUG: "0" });
  assert.match(without, /^\S+ INFO info line\n$/);
});

Deno.test("operational log: a WARN/ERROR flood is capped per window and the rest counted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-oplog-flood-" });
  try {
    const path = `${dir}/egress.log`;
    let now = at.getTime();
    const log = new OperationalLog({
      path,
      stderr: false,
      now: () => new Date(now),
      floodLimit: 3,
      floodWindowMs: 1000,
    });
    for (let i = 0; i < 10; i++) log.warn(`refused ${i}`);
    log.info("startup step"); // never held back
    log.error("late error"); // still inside the window: suppressed
    now += 1000;
    log.error("next window");
    for (let i = 0; i < 5; i++) log.warn(`again ${i}`);
    log.close();
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n").map((l) => l.slice(25));
    assert.deepEqual(lines, [
      "WARN refused 0",
      "WARN refused 1",
      "WARN refused 2",
      "INFO startup step",
      "WARN operational log: 8 WARN/ERROR lines suppressed (more than 3 in 1000 ms)",
      "ERROR next window",
      "WARN again 0",
      "WARN again 1",
      "WARN operational log: 3 WARN/ERROR lines suppressed (more than 3 in 1000 ms)",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
