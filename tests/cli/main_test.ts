import assert from "node:assert/strict";
import denoConfig from "../../deno.json" with { type: "json" };
import { runCli } from "./run_cli.ts";

Deno.test("main: --version, global and per-command help", async () => {
  const v = await runCli(["--version"]);
  assert.equal(v.code, 0);
  assert.equal(v.stdout, `egress ${denoConfig.version}\n`);
  for (const args of [["-h"], ["--help"], ["help"]]) {
    const h = await runCli(args);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /^Usage: egress <command>/);
  }
  for (const command of ["validate", "analyze", "demo"]) {
    const h = await runCli([command, "--help"]);
    assert.equal(h.code, 0, h.stderr);
    assert.match(h.stdout, new RegExp(`^Usage: egress ${command}`));
    const viaHelp = await runCli(["help", command]);
    assert.equal(viaHelp.stdout, h.stdout);
  }
});

Deno.test("main: no command or an unknown one ⇒ usage on stderr, 2", async () => {
  const none = await runCli([]);
  assert.equal(none.code, 2);
  assert.equal(none.stdout, "");
  assert.match(none.stderr, /^Usage: egress <command>/);
  const unknown = await runCli(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^egress: unknown command "frobnicate"\nUsage: egress/);
  const option = await runCli(["--frob"]);
  assert.equal(option.code, 2);
  assert.match(option.stderr, /^egress: unknown option "--frob"/);
});

Deno.test("main: every listed command dispatches to its own help", async () => {
  const { USAGE } = await import("../../src/cli/main.ts");
  const listed = [...USAGE.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]);
  assert.ok(listed.length >= 10, listed.join(","));
  for (const command of listed) {
    const r = await runCli([command, "--help"]);
    assert.equal(r.code, 0, `${command}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Usage: egress ${command}`), command);
  }
});

Deno.test("main: user errors are one line with their exit code; other errors are internal errors, exit 1", async () => {
  const { runGuarded } = await import("../../src/cli/main.ts");
  const { CliError, UsageError } = await import("../../src/cli/args.ts");
  const printed: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    assert.equal(await runGuarded("x", () => Promise.reject(new UsageError("bad flag"))), 2);
    assert.equal(await runGuarded("x", () => Promise.reject(new CliError("Cannot analyze: y", 1))), 1);
    assert.equal(await runGuarded("x", () => Promise.reject(new RangeError("boom"))), 1);
    assert.equal(await runGuarded("x", () => Promise.resolve(0)), 0);
  } finally {
    console.error = original;
  }
  assert.deepEqual(printed, [
    "egress x: bad flag",
    "egress x: Cannot analyze: y",
    "egress: internal error: boom",
  ]);
});
