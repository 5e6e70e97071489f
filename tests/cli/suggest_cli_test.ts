import assert from "node:assert/strict";
import { ciJobLog, LogWriter, RUNNER } from "../tools/recorded_logs.ts";
import { runCli, tempFiles } from "./run_cli.ts";

Deno.test("egress suggest: prints the policy; egress analyze of the same log against it blocks nothing", async () => {
  // Without the unattributed line (analyze must block that one: no scoped rule can allow it).
  const log = ciJobLog();
  log.lines.pop();
  const { dir, cleanup } = await tempFiles({ "audit.jsonl": log.text() });
  try {
    const suggested = await runCli(["suggest", "--log", `${dir}/audit.jsonl`]);
    assert.equal(suggested.code, 0, suggested.stderr);
    assert.equal(suggested.stderr, "");
    assert.match(suggested.stdout, /^# Suggested by egress suggest from .*audit\.jsonl \(scope auto\)/);
    assert.ok(suggested.stdout.endsWith("\n[]\n"));
    await Deno.writeTextFile(`${dir}/policy.txt`, suggested.stdout);
    const validated = await runCli(["validate", `${dir}/policy.txt`]);
    assert.equal(validated.code, 0, validated.stdout + validated.stderr);
    const analyzed = await runCli(["analyze", `${dir}/policy.txt`, "--log", `${dir}/audit.jsonl`]);
    assert.equal(analyzed.code, 0, analyzed.stdout + analyzed.stderr);
    assert.match(analyzed.stdout, / 0 blocked, 1 failed/);
  } finally {
    await cleanup();
  }
});

Deno.test("egress suggest --hosts --scope none --no-defaults, from stdin", async () => {
  const w = new LogWriter();
  w.add({
    type: "tcp",
    dst_ip: "192.0.2.7",
    dst_port: 22,
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    exe: "/usr/bin/ssh",
    cgroup: RUNNER,
    step: "__run",
  });
  w.add({
    type: "dns",
    dst_ip: "127.0.0.53",
    dst_port: 53,
    name: "example.org",
    policy: "deny",
    reason: "name not allowed",
    audit: true,
    exe: "/usr/bin/ssh",
    cgroup: RUNNER,
    step: "__run",
  });
  const result = await runCli(["suggest", "--log", "-", "--hosts", "--scope", "none", "--no-defaults"], {
    stdin: w.text(),
  });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(
    result.stdout,
    "# Suggested by egress suggest from <stdin> (scope none, host rules, no built-in rules): review before use.\n" +
      "127.0.0.53:53/udp  # step __run, /usr/bin/ssh\n" +
      "192.0.2.7:22  # step __run, /usr/bin/ssh\n" +
      "dns:example.org  # step __run, /usr/bin/ssh\n" +
      "[]\n",
  );
});

Deno.test("egress suggest: usage errors and a missing log exit 2; bad lines are warned", async () => {
  const missing = await runCli(["suggest"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--log FILE is required/);
  const scope = await runCli(["suggest", "--log", "x.jsonl", "--scope", "user"]);
  assert.equal(scope.code, 2);
  assert.match(scope.stderr, /"user" is not auto, none, step, action or exe/);
  const noFile = await runCli(["suggest", "--log", "/nonexistent/log.jsonl"]);
  assert.equal(noFile.code, 2);
  assert.match(noFile.stderr, /Cannot read log \/nonexistent\/log\.jsonl: no such file/);
  const bad = await runCli(["suggest", "--log", "-"], { stdin: "not json\n" });
  assert.equal(bad.code, 0);
  assert.match(bad.stderr, /-:1: warning: skipped line: not valid JSON/);
  assert.ok(bad.stdout.endsWith("[]\n"));
  const help = await runCli(["suggest", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: egress suggest --log FILE/);
});
