import assert from "node:assert/strict";
import { parseArgs, UsageError } from "../../src/cli/args.ts";

const SPECS = {
  repo: { kind: "string" },
  log: { kind: "string" },
  json: { kind: "boolean" },
  quiet: { kind: "boolean", short: "q" },
  ca: { kind: "strings" },
} as const;

Deno.test("args: long flags with = and with a separate value, booleans, positionals", () => {
  const { flags, positionals } = parseArgs(["a.yml", "--repo=o/r", "--log", "x.jsonl", "--json", "b"], SPECS);
  assert.equal(flags.repo, "o/r");
  assert.equal(flags.log, "x.jsonl");
  assert.equal(flags.json, true);
  assert.equal(flags.quiet, false);
  assert.deepEqual(flags.ca, []);
  assert.deepEqual(positionals, ["a.yml", "b"]);
});

Deno.test("args: short alias, repeatable flag, '-' positional, '--' ends flags, empty = value", () => {
  const { flags, positionals } = parseArgs(["-q", "--ca", "1.pem", "--ca=2.pem", "-", "--", "--json"], SPECS);
  assert.equal(flags.quiet, true);
  assert.equal(flags.json, false);
  assert.deepEqual(flags.ca, ["1.pem", "2.pem"]);
  assert.deepEqual(positionals, ["-", "--json"]);
  assert.equal(parseArgs(["--repo="], SPECS).flags.repo, "");
  assert.equal(parseArgs(["--log", "-"], SPECS).flags.log, "-");
});

Deno.test("args: errors name the offending flag", () => {
  const cases: Array<[string[], RegExp]> = [
    [["--nope"], /unknown flag "--nope"/],
    [["--nope=1"], /unknown flag "--nope"/],
    [["-x"], /unknown flag "-x"/],
    [["--repo"], /flag --repo needs a value/],
    [["--repo", "--json"], /flag --repo needs a value/],
    [["--json=yes"], /flag --json takes no value/],
    [["--repo", "a/b", "--repo=c/d"], /flag --repo given more than once/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseArgs(argv, SPECS), (e: unknown) => {
      assert.ok(e instanceof UsageError, `${argv.join(" ")}: UsageError expected`);
      assert.equal(e.exitCode, 2);
      assert.match(e.message, message);
      return true;
    });
  }
});
