// `egress start` flags (cli.md) → DaemonConfig.
import assert from "node:assert/strict";
import { instanceName, parseStartArgs } from "../../src/daemon/config.ts";
import { CliError } from "../../src/cli/args.ts";

Deno.test("start flags: defaults of cli.md", () => {
  const config = parseStartArgs([], () => undefined);
  assert.notEqual(config, "help");
  if (config === "help") return;
  assert.equal(config.logPath, "/var/log/egress/connections.jsonl");
  assert.equal(config.operationalLogPath, "/var/log/egress/egress.log");
  assert.equal(config.controlSocket, "/run/egress.sock");
  assert.equal(config.stateDir, "/run/egress");
  assert.equal(config.proxyPort, 15080);
  assert.equal(config.dnsPort, 15053);
  assert.equal(config.queueNum, 15);
  assert.equal(config.policyPath, undefined);
  assert.equal(config.audit, false);
  assert.equal(config.cgroup, undefined);
  assert.equal(config.runner, false);
  assert.equal(config.allowSudo, false);
  assert.equal(config.containerCerts, true);
});

Deno.test("start flags: runner mode and its options", () => {
  const config = parseStartArgs(["--runner", "--allow-sudo", "--no-container-certs"], () => undefined);
  if (config === "help") throw new Error("help");
  assert.deepEqual([config.runner, config.allowSudo, config.containerCerts], [true, true, false]);
});

Deno.test("start flags: every flag, repeatable ones, GITHUB_REPOSITORY", () => {
  const config = parseStartArgs([
    "--policy=-",
    "--audit",
    "--log",
    "/tmp/x/c.jsonl",
    "--cgroup",
    "/ci-jobs",
    "--control-socket",
    "/tmp/s",
    "--state-dir",
    "/tmp/st/",
    "--ready-file",
    "/tmp/r",
    "--proxy-port",
    "1",
    "--dns-port",
    "65535",
    "--queue-num",
    "0",
    "--upstream-ca",
    "a.pem",
    "--upstream-ca",
    "b.pem",
    "--dns-upstream",
    "10.0.0.1",
    "--dns-upstream",
    "10.0.0.2:5353",
  ], (key) => key === "GITHUB_REPOSITORY" ? "o/r" : undefined);
  assert.notEqual(config, "help");
  if (config === "help") return;
  assert.equal(config.policyPath, "-");
  assert.equal(config.operationalLogPath, "/tmp/x/egress.log");
  assert.equal(config.stateDir, "/tmp/st");
  assert.equal(config.repository, "o/r");
  assert.deepEqual(config.upstreamCaFiles, ["a.pem", "b.pem"]);
  assert.deepEqual(config.dnsUpstreams, [{ ip: "10.0.0.1", port: 53 }, { ip: "10.0.0.2", port: 5353 }]);
  assert.equal(config.proxyPort, 1);
  assert.equal(config.queueNum, 0);
});

Deno.test("start flags: package check flags, bad values are usage errors (exit 2)", () => {
  const checked = parseStartArgs(
    ["--package-check", "--package-check-url", "http://127.0.0.1:9/api"],
    () => undefined,
  );
  if (checked === "help") throw new Error("unexpected help");
  assert.equal(checked.packageCheck, true);
  assert.equal(checked.packageCheckUrl, "http://127.0.0.1:9/api");
  const fromEnv = parseStartArgs(
    ["--package-check"],
    (key) => key === "EGRESS_PACKAGE_CHECK_URL" ? "http://127.0.0.1:8/x" : undefined,
  );
  if (fromEnv !== "help") assert.equal(fromEnv.packageCheckUrl, "http://127.0.0.1:8/x");
  assert.throws(
    () => parseStartArgs(["--package-check-url", "not a url"]),
    (e: unknown) => e instanceof CliError && e.exitCode === 2 && /--package-check-url/.test(e.message),
  );
  for (const argv of [["--allow-sudo"], ["--no-container-certs"]]) {
    assert.throws(
      () => parseStartArgs(argv),
      (e: unknown) => e instanceof CliError && e.exitCode === 2 && /needs --runner/.test(e.message),
    );
  }
  for (
    const argv of [
      ["--proxy-port", "0"],
      ["--proxy-port", "70000"],
      ["--dns-port", "x"],
      ["--proxy-port", "5", "--dns-port", "5"],
      ["--dns-upstream", "host.example"],
      ["--dns-upstream", "1.2.3.4:0"],
      ["--repo", "noslash"],
      ["--bogus"],
      ["extra"],
    ]
  ) {
    assert.throws(
      () => parseStartArgs(argv),
      (e: unknown) => e instanceof CliError && e.exitCode === 2,
      argv.join(" "),
    );
  }
  assert.equal(parseStartArgs(["-h"]), "help");
});

Deno.test("instance name: stable per state dir, distinct between dirs, valid pin name", () => {
  assert.equal(instanceName("/run/egress"), instanceName("/run/egress"));
  assert.notEqual(instanceName("/tmp/a/state"), instanceName("/tmp/b/state"));
  assert.match(instanceName("/tmp/we ird/$tate"), /^[A-Za-z0-9_.-]+$/);
});

Deno.test("start and demo without root: a clear message and exit 1, before anything else", async () => {
  const { runStart } = await import("../../src/cli/start.ts");
  const { runDemo } = await import("../../src/cli/demo.ts");
  const { runGuarded } = await import("../../src/cli/main.ts");
  const errors: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => errors.push(args.join(" "));
  try {
    // A policy path that does not exist: the root check comes first, so it is never read.
    assert.equal(await runGuarded("start", () => runStart(["--policy", "/nonexistent/p"], () => 1000)), 1);
    assert.match(errors.join("\n"), /^egress start: needs root/m);
    assert.equal(await runDemo([], () => 1000), 1);
    assert.match(
      errors.join("\n"),
      /^egress demo: needs root: it creates two throw-away network namespaces/m,
    );
    assert.equal(
      await runGuarded("start", () => runStart(["--proxy-port", "0"], () => 1000)),
      2,
      "usage first",
    );
  } finally {
    console.error = original;
  }
});

Deno.test("start flags: --log-max-size sets the rotation cap (default 512M, 0 = never)", () => {
  const parsed = (argv: string[]) => {
    const config = parseStartArgs(argv);
    if (config === "help") throw new Error("unexpected help");
    return config.logMaxBytes;
  };
  assert.equal(parsed([]), 512 * 1024 * 1024);
  assert.equal(parsed(["--log-max-size", "0"]), 0);
  assert.equal(parsed(["--log-max-size", "64K"]), 64 * 1024);
  assert.equal(parsed(["--log-max-size", "2g"]), 2 * 1024 ** 3);
  for (const bad of ["10", "1T", "-1", "x", "1.5M"]) {
    assert.throws(
      () => parsed(["--log-max-size", bad]),
      (e: unknown) => e instanceof CliError && e.exitCode === 2,
      bad,
    );
  }
});
