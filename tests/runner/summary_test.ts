import assert from "node:assert/strict";
import {
  countEvents,
  destinationOf,
  escapeCell,
  MAX_ROWS,
  renderJobSummary,
  shouldUploadLog,
} from "../../src/runner/summary.ts";
import type { LogEvent } from "../../src/tools/replay.ts";

const deny = (extra: Partial<LogEvent>): LogEvent => ({
  type: "https",
  dst_ip: "203.0.113.5",
  dst_port: 443,
  src_port: 40000,
  policy: "deny",
  reason: "no rule matched",
  ...extra,
});
const allow = (extra: Partial<LogEvent>): LogEvent => ({
  ...deny(extra),
  policy: "allow",
  reason: undefined,
  ...extra,
});

Deno.test("summary: destinations by type", () => {
  assert.equal(
    destinationOf(deny({ url: "https://x.test/a/b?token=***", method: "GET" })),
    "https://x.test/a/b",
  );
  assert.equal(destinationOf(deny({ host: "x.test" })), "x.test:443");
  assert.equal(destinationOf(deny({ type: "tcp", dst_port: 22 })), "203.0.113.5:22");
  assert.equal(destinationOf(deny({ type: "udp", dst_port: 123 })), "203.0.113.5:123/udp");
  assert.equal(destinationOf(deny({ type: "dns", name: "evil.test", dst_port: 53 })), "evil.test");
  assert.equal(escapeCell("a|b`c"), "a\\|b\\`c");
});

Deno.test("summary: denied first, grouped by step and process, allowed collapsed, suggestion fenced", () => {
  const events: LogEvent[] = [
    allow({ step: "build", host: "registry.npmjs.org", exe: "/usr/bin/node", action: "actions/setup-node" }),
    allow({ step: "build", host: "registry.npmjs.org", exe: "/usr/bin/node", action: "actions/setup-node" }),
    deny({ step: "test", url: "https://evil.test/x|y?q=***", method: "POST", exe: "/usr/bin/curl" }),
    deny({ step: "test", url: "https://evil.test/x|y?q=***", method: "POST", exe: "/usr/bin/curl" }),
    deny({ type: "tcp", dst_port: 5432, image: "postgres:16", exe: "/usr/bin/psql" }),
    {
      type: "dns_response",
      name: "registry.npmjs.org",
      answers: ["1.2.3.4"],
      ttl: 60,
      policy: "allow",
      dst_ip: "127.0.0.53",
      dst_port: 53,
      src_port: 1,
    },
    { ...allow({ host: "bad-cert.test" }), error: "tls_client_rejected_ca" },
    {
      type: "sudo",
      ts: "2026-12-01T18:40:02.000Z",
      cmdline: ["/usr/bin/apt-get", "install", "jq"],
      ...{ pwd: "/home/runner", target_user: "root" },
    } as LogEvent,
  ];
  assert.deepEqual(countEvents(events), { allowed: 3, denied: 3, errors: 1 });
  const text = renderJobSummary(events, { mode: "enforce", suggestion: "# comment with ``` inside\n[]\n" });
  assert.match(text, /Mode: \*\*enforce\*\* · allowed: \*\*3\*\* · denied: \*\*3\*\* · errors: \*\*1\*\*/);
  const test = text.indexOf("### Step `test`");
  const noStep = text.indexOf("### Step `(no step)`");
  const build = text.indexOf("### Step `build`");
  assert.ok(test >= 0 && noStep >= 0 && build >= 0);
  assert.ok(test < build && noStep < build, "steps with denials come first");
  assert.ok(text.includes("| ❌ denied | `https://evil.test/x\\|y` | `/usr/bin/curl` |  | 2 |"), text);
  assert.ok(text.includes("| ❌ denied | `203.0.113.5:5432` | `/usr/bin/psql, image postgres:16` |  | 1 |"));
  assert.ok(text.includes("<details><summary>2 allowed (1 destinations)</summary>"));
  assert.ok(
    text.includes("| ✅ allowed | `registry.npmjs.org:443` | `/usr/bin/node` | `actions/setup-node` | 2 |"),
  );
  assert.ok(
    text.includes("| 2026-12-01T18:40:02.000Z | `/usr/bin/apt-get install jq` | /home/runner | root |"),
  );
  assert.ok(
    text.includes("### Suggested policy\n\n````yaml\n# comment with ``` inside\n[]\n````"),
    "fence longer than any backtick run",
  );
});

Deno.test("summary: at most 100 rows per table, then a count", () => {
  const events = Array.from({ length: MAX_ROWS + 7 }, (_, i) => deny({ host: `h${i}.test` }));
  const text = renderJobSummary(events, { mode: "audit" });
  assert.equal(text.split("\n").filter((line) => line.startsWith("| ❌ denied")).length, MAX_ROWS);
  assert.ok(text.includes("… 7 more"));
  assert.ok(text.includes("audit mode: denied connections were let through"));
  assert.ok(renderJobSummary([], { mode: "enforce" }).includes("No connections were logged."));
});

Deno.test("artifact rule: false never, true always, auto on audit, deny or error", () => {
  const clean = [allow({ host: "a.test" })];
  assert.equal(shouldUploadLog("false", true, [deny({})]), false);
  assert.equal(shouldUploadLog("true", false, []), true);
  assert.equal(shouldUploadLog("auto", false, clean), false);
  assert.equal(shouldUploadLog("auto", true, clean), true);
  assert.equal(shouldUploadLog("auto", false, [...clean, deny({})]), true);
  assert.equal(shouldUploadLog("auto", false, [{ ...allow({}), error: "upstream_unreachable" }]), true);
});
