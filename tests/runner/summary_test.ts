import assert from "node:assert/strict";
import {
  codeCell,
  countEvents,
  destinationOf,
  literalText,
  MAX_CELL_CHARS,
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
});

/** What a Markdown renderer shows for numeric character references. */
function decoded(text: string): string {
  return text.replace(/&#(\d+);/g, (_, code) => String.fromCodePoint(Number(code)));
}
const cell = (text: string) => `<code>${literalText(text)}</code>`;

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
  const test = text.indexOf(`### Step ${cell("test")}`);
  const noStep = text.indexOf(`### Step ${cell("(no step)")}`);
  const build = text.indexOf(`### Step ${cell("build")}`);
  assert.ok(test >= 0 && noStep >= 0 && build >= 0);
  assert.ok(test < build && noStep < build, "steps with denials come first");
  assert.ok(
    text.includes(`| ❌ denied | ${cell("https://evil.test/x|y")} | ${cell("/usr/bin/curl")} |  | 2 |`),
  );
  assert.ok(
    text.includes(
      `| ❌ denied | ${cell("203.0.113.5:5432")} | ${cell("/usr/bin/psql, image postgres:16")} |  | 1 |`,
    ),
  );
  assert.ok(text.includes("<details><summary>2 allowed (1 destinations)</summary>"));
  assert.ok(
    text.includes(
      `| ✅ allowed | ${cell("registry.npmjs.org:443")} | ${cell("/usr/bin/node")} | ${
        cell("actions/setup-node")
      } | 2 |`,
    ),
  );
  assert.ok(
    text.includes(
      `| ${literalText("2026-12-01T18:40:02.000Z")} | ${cell("/usr/bin/apt-get install jq")} | ${
        cell("/home/runner")
      } | ${cell("root")} |`,
    ),
  );
  assert.ok(
    text.includes("### Suggested policy\n\n> Review every line before pasting") &&
      text.includes("\n\n````yaml\n# comment with ``` inside\n[]\n````"),
    "fence longer than any backtick run",
  );
});

Deno.test("summary: log text is shown literally, never as Markdown or HTML", () => {
  const payloads = [
    "evil.test`</code></details><img src=https://x.test/p.png>",
    "a|b|c | ❌ denied | `x` | y |",
    "[click](https://phish.test/) **bold** _it_ ~~s~~ <!-- c --> &amp; \\| \\`",
    "www.autolink.test user@mail.test https://auto.test/",
    "x\n### Step fake\n| ✅ allowed |",
  ];
  for (const payload of payloads) {
    const literal = literalText(payload);
    assert.match(literal, /^[A-Za-z0-9 &#;\u0080-\u{10ffff}]*$/u, "only letters, digits, spaces, references");
    assert.equal(decoded(literal).replace(/\\u000a/g, "\n"), payload);
  }
  assert.equal(literalText("a\u202eb\u200bc"), "a&#92;u202eb&#92;u200bc", "bidi and zero-width made visible");
  assert.equal(literalText("x".repeat(MAX_CELL_CHARS + 5)), "x".repeat(MAX_CELL_CHARS) + "…");
  assert.equal(codeCell(""), "");

  const events = payloads.flatMap((payload) => [
    deny({ step: payload, action: payload, exe: payload, url: `https://h.test/${payload}` }),
    deny({ type: "dns", name: payload, step: payload }),
    { type: "sudo", cmdline: [payload], ts: payload, ...{ pwd: payload, target_user: payload } } as LogEvent,
  ]);
  const text = renderJobSummary(events, { mode: "enforce", suggestion: payloads.join("\n") });
  const [body, suggestion] = text.split("### Suggested policy");
  const sudoRows = body.slice(body.indexOf("### sudo")).split("\n").filter((line) => line.startsWith("| "));
  for (const line of body.split("\n")) {
    if (line.startsWith("| ")) {
      const cells = sudoRows.includes(line) ? 4 : 5;
      assert.equal(line.split("|").length - 2, cells, `a table row keeps its cells: ${line}`);
    }
    if (line.startsWith("Mode: ")) continue; // the one line of our own bold text
    const tags = line.replace(/<\/?(code|details|summary)>/g, "");
    assert.doesNotMatch(tags, /[<>`\[\]*_~\\]/, `no markup from the log: ${line}`);
    assert.ok(!line.startsWith("#") || line.startsWith("## egress") || /^### (Step <code>|sudo)/.test(line));
  }
  assert.equal(sudoRows.length, 1 + payloads.length, "header and one row per sudo event");
  assert.ok(suggestion.includes(payloads[0]), "the suggestion block is fenced, shown as it is");
});

Deno.test("summary: the size stays bounded however many steps the log names", () => {
  const long = "p".repeat(MAX_CELL_CHARS);
  const events = Array.from(
    { length: 3000 },
    (_, i) => deny({ step: `s${i}`, host: `${long}${i}.test`, exe: `/${long}/${i}` }),
  );
  const text = renderJobSummary(events, { mode: "enforce" });
  assert.ok(text.length < 600 * 1024, `${text.length} characters`);
  assert.match(text, /… \d+ more steps \(summary size limit; the log has every line\)/);
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
