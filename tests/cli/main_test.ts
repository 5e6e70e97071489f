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

Deno.test("main: commands not built yet say so and exit 2", async () => {
  for (const command of ["start", "stop", "status", "suggest", "permissions", "sidecar"]) {
    const r = await runCli([command, "--policy", "x"]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, `egress ${command}: not available yet in this version\n`);
  }
});

Deno.test("demo: says it intercepts nothing, decides the samples, prints the summary, exits 0", async () => {
  const r = await runCli(["demo"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /live interception \(`egress start`\) arrives in a later release/);
  assert.match(r.stdout, /^policy: \d+ rules, 0 errors, 0 warnings$/m);
  const decisions = r.stdout.split("\n").filter((l) => /^(allow|deny) /.test(l));
  assert.ok(decisions.length >= 10);
  const allowed = decisions.filter((l) => l.startsWith("allow")).length;
  const denied = decisions.length - allowed;
  assert.ok(allowed > 0 && denied > 0);
  assert.match(r.stdout, new RegExp(`^${allowed} allowed, ${denied} denied$`, "m"));
  const verdict = (what: string) => decisions.find((l) => l.includes(what))?.split(" ")[0];
  assert.equal(verdict("TLS to github.com"), "allow");
  assert.equal(verdict("GET https://api.example.com/v1/items"), "allow");
  assert.equal(verdict("POST https://api.example.com/v1/items"), "deny");
  assert.equal(verdict("TLS to exfil.example"), "deny");
  assert.equal(verdict("DNS exfil.example via 8.8.8.8"), "deny");
  assert.match(
    decisions.find((l) => l.includes("DNS github.com via 1.1.1.1")) ?? "",
    /resolver not allowed$/,
  );
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
