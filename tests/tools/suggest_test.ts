import assert from "node:assert/strict";
import { replay } from "../../src/cli/analyze.ts";
import type { LogEntry, LogEvent } from "../../src/cli/connection_log.ts";
import { parseConnectionLog } from "../../src/cli/connection_log.ts";
import { DnsCache, Enforcer, parsePolicy, validatePolicy } from "../../src/policy/mod.ts";
import { ruleSourceText } from "../../src/policy/policy.ts";
import type { ConnectionEvent } from "../../src/policy/types.ts";
import {
  collapsePaths,
  isVariableSegment,
  parseScope,
  suggestionPolicyOptions,
  suggestPolicy,
} from "../../src/tools/suggest.ts";
import type { SuggestOptions } from "../../src/tools/suggest.ts";
import {
  CHECKOUT,
  ciJobLog,
  DOCKERD,
  IN_CONTAINER,
  LogWriter,
  NPM,
  RUNNER,
  SCRIPT_ACTION,
  SSH,
} from "./recorded_logs.ts";

function entriesOf(writer: LogWriter): LogEntry[] {
  const parsed = parseConnectionLog(writer.text());
  assert.deepEqual(parsed.problems, []);
  return parsed.entries;
}

function events(writer: LogWriter): LogEvent[] {
  return entriesOf(writer).map((e) => e.event);
}

/** Replays the log against the suggestion exactly as `egress analyze` does. */
function blockedByReplay(writer: LogWriter, text: string, noDefaults = false) {
  const options = suggestionPolicyOptions(noDefaults);
  const { errors } = validatePolicy(text, options);
  assert.deepEqual(errors, [], text);
  const policy = parsePolicy(text, options);
  const findings = replay(
    entriesOf(writer),
    policy,
    (i) => ({ rule: ruleSourceText(policy, i), line: policy.rules[i].line }),
  );
  return findings.filter((f) => f.status === "blocked");
}

/** Deterministic Fisher–Yates with a small LCG. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let state = seed;
  for (let i = out.length - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) % 2147483648;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Judges one hand-made event against the suggestion (no DNS cache needed for URL events). */
function allows(text: string, event: ConnectionEvent, noDefaults = false): boolean {
  const policy = parsePolicy(text, suggestionPolicyOptions(noDefaults));
  return new Enforcer(policy, { dnsCache: new DnsCache() }).decide(event).allowed;
}

const OPTION_SETS: Array<[string, SuggestOptions]> = [
  ["auto", {}],
  ["none", { scope: "none" }],
  ["step,exe", { scope: ["step", "exe"] }],
  ["hosts", { hosts: true }],
  ["hosts none", { hosts: true, scope: "none" }],
  ["no-defaults", { noDefaults: true }],
];

for (const [label, options] of OPTION_SETS) {
  Deno.test(`suggest (${label}): the replay of the recorded job allows everything but the unattributed`, () => {
    const log = ciJobLog();
    const text = suggestPolicy(events(log), options);
    assert.ok(text.endsWith("\n[]\n"), text);
    assert.doesNotMatch(text, /not allowed by this suggestion/, text);
    const blocked = blockedByReplay(log, text, options.noDefaults);
    assert.deepEqual(
      blocked.map((f) => f.destination),
      ["dns telemetry.example.net via 127.0.0.53:53"],
      text,
    );
    assert.equal(blocked[0].process.cgroup, undefined);
  });

  Deno.test(`suggest (${label}): the same log shuffled gives the same text`, () => {
    const list = events(ciJobLog());
    const reference = suggestPolicy(list, options);
    for (const seed of [1, 7, 42]) assert.equal(suggestPolicy(shuffled(list, seed), options), reference);
  });
}

Deno.test("suggest: URL rules with methods merged, varying ids/hashes collapsed, exact elsewhere", () => {
  const text = suggestPolicy(events(ciJobLog()));
  const node = `exe=${SCRIPT_ACTION.exe}`;
  assert.match(
    text,
    new RegExp(
      `^GET https://api\\.github\\.com/repos/octo/app/actions/runs/\\*/jobs ${node}  # step label \\(actions/github-script\\)`,
      "m",
    ),
  );
  assert.match(text, /^POST https:\/\/api\.github\.com\/repos\/octo\/app\/issues\/42\/comments /m);
  assert.match(
    text,
    /^GET https:\/\/registry-1\.docker\.io\/v2\/library\/node\/blobs\/\* exe=\/usr\/bin\/dockerd/m,
  );
  // One manifest by tag, one by digest: a single digest path is kept exact.
  assert.match(text, /^HEAD https:\/\/registry-1\.docker\.io\/v2\/library\/node\/manifests\/18-alpine /m);
  assert.match(text, /^GET https:\/\/registry\.npmjs\.org\/express\/-\/express-4\.18\.2\.tgz /m);
  // The query is not part of the rule.
  assert.match(text, /^GET https:\/\/github\.com\/octo\/app\/info\/refs exe=/m);
  assert.match(text, /^POST https:\/\/github\.com\/octo\/app\/git-upload-pack exe=/m);
  assert.doesNotMatch(text, /\?/);
});

Deno.test("suggest: headers carry step/action, cgroup and image; exe goes onto rules", () => {
  const text = suggestPolicy(events(ciJobLog()));
  const lines = text.split("\n");
  assert.ok(lines.includes("[step=__actions_checkout action=actions/checkout]"));
  assert.ok(lines.includes("[step=__run_3 cgroup=@docker image=node:18-alpine]"));
  assert.ok(lines.includes("[step=__run_3 cgroup=@docker]"), "dockerd runs in docker.service");
  assert.ok(lines.includes("[cgroup=/system.slice/chrony.service]"));
  assert.ok(lines.includes(`162.159.200.1:123/udp exe=/usr/sbin/chronyd  # no step, /usr/sbin/chronyd`));
  // The container's resolver is Docker's, no built-in covers it; the runner's stub is built in.
  assert.ok(lines.some((l) => l.startsWith("127.0.0.11:53/udp exe=/usr/local/bin/node")));
  assert.ok(!lines.some((l) => l.startsWith("127.0.0.53:53/udp exe=/usr/bin/python3.12")));
  // dockerd is not in the runner cgroup: the built-in stub rule does not cover it.
  assert.ok(lines.some((l) => l.startsWith("127.0.0.53:53/udp exe=/usr/bin/dockerd")));
});

Deno.test("suggest: DNS adds only what is missing; tcp by name when the log resolved it, else by IP", () => {
  const text = suggestPolicy(events(ciJobLog()));
  const lines = text.split("\n");
  assert.ok(lines.some((l) => l.startsWith("8.8.8.8:53/udp exe=/usr/bin/ssh")));
  assert.ok(lines.some((l) => l.startsWith("dns:mirror.example.org exe=/usr/bin/ssh")));
  // Names that a URL or host rule of the same scope covers get no dns: rule.
  assert.ok(!lines.some((l) => l.startsWith("dns:github.com") || l.startsWith("dns:api.github.com")), text);
  assert.ok(lines.some((l) => l.startsWith("github.com:22 exe=/usr/bin/ssh")));
  assert.ok(lines.some((l) => l.startsWith("github.com passthrough exe=/usr/bin/ssh")), "passthrough kept");
  assert.ok(lines.some((l) => l.startsWith("198.51.100.7:5432 exe=/usr/bin/ssh")));
});

Deno.test("suggest: built-in, failed and unattributed lines are left out", () => {
  const text = suggestPolicy(events(ciJobLog()));
  assert.doesNotMatch(text, /^[^#]*results-receiver/m);
  assert.doesNotMatch(text, /^[^#]*pinned\.example\.org/m);
  assert.match(text, /^# unattributed: dns telemetry\.example\.net via 127\.0\.0\.53:53$/m);
  assert.doesNotMatch(text, /^[^#]*telemetry/m);
});

Deno.test("suggest: nothing broader than needed", () => {
  const text = suggestPolicy(events(ciJobLog()));
  const scriptEvent = (
    url: string,
    method = "GET",
    extra: Partial<ConnectionEvent> = {},
  ): ConnectionEvent => ({
    type: "https",
    dst_ip: "140.82.112.5",
    dst_port: 443,
    url,
    method,
    exe: SCRIPT_ACTION.exe,
    cgroup: RUNNER,
    step: SCRIPT_ACTION.step,
    action: SCRIPT_ACTION.action,
    ...extra,
  });
  // What the log did is allowed ...
  assert.ok(allows(text, scriptEvent("https://api.github.com/repos/octo/app/actions/runs/99/jobs")));
  // ... an unrelated host, another path, another method, another step or process is not.
  assert.ok(!allows(text, scriptEvent("https://evil.example.com/repos/octo/app/actions/runs/99/jobs")));
  assert.ok(!allows(text, scriptEvent("https://api.github.com/repos/octo/other/actions/runs/99/jobs")));
  assert.ok(
    !allows(text, scriptEvent("https://api.github.com/repos/octo/app/actions/runs/99/jobs", "DELETE")),
  );
  assert.ok(
    !allows(
      text,
      scriptEvent("https://api.github.com/repos/octo/app/actions/runs/99/jobs", "GET", { step: "__run_9" }),
    ),
  );
  assert.ok(
    !allows(
      text,
      scriptEvent("https://api.github.com/repos/octo/app/actions/runs/99/jobs", "GET", {
        exe: "/usr/bin/curl",
      }),
    ),
  );
  assert.ok(
    !allows(
      text,
      scriptEvent("https://api.github.com/repos/octo/app/actions/runs/99/jobs", "GET", {
        cgroup: "/system.slice/docker-1.scope",
      }),
    ),
  );
  // npm tarballs stay exact: another package is not allowed.
  const npm = (path: string): ConnectionEvent => ({
    type: "https",
    dst_ip: "104.16.2.35",
    dst_port: 443,
    url: `https://registry.npmjs.org${path}`,
    method: "GET",
    exe: NPM.exe,
    cgroup: RUNNER,
    step: NPM.step,
  });
  assert.ok(allows(text, npm("/lodash/-/lodash-4.17.21.tgz")));
  assert.ok(!allows(text, npm("/left-pad/-/left-pad-1.3.0.tgz")));
  // The container's rules do not apply to runner processes and vice versa.
  assert.ok(
    !allows(text, {
      ...scriptEvent("https://api.example.com/v1/items/5"),
      exe: IN_CONTAINER.exe,
      step: IN_CONTAINER.step,
      action: undefined,
    }),
  );
  assert.ok(allows(text, {
    type: "https",
    dst_ip: "203.0.113.50",
    dst_port: 443,
    url: "https://api.example.com/v1/items/5",
    method: "GET",
    ...IN_CONTAINER,
  }));
  // ssh may reach github.com:22 only, not other ports.
  const ssh = { type: "tcp" as const, dst_ip: "198.51.100.7", ...SSH };
  assert.ok(allows(text, { ...ssh, dst_port: 5432 }));
  assert.ok(!allows(text, { ...ssh, dst_port: 5433 }));
  assert.ok(!allows(text, { ...ssh, dst_ip: "198.51.100.8", dst_port: 5432 }));
});

Deno.test("suggest --hosts: host rules with merged ports; http gets :80, other ports are written", () => {
  const w = new LogWriter();
  const p = { exe: "/usr/bin/curl", cgroup: RUNNER, step: "__run" };
  w.resolve("mirror.example.com", ["192.0.2.10"], p);
  for (
    const [url, port] of [["http://mirror.example.com/a", 80], ["https://mirror.example.com/b", 443], [
      "https://mirror.example.com:8443/c",
      8443,
    ]] as const
  ) {
    w.add({
      type: url.startsWith("https") ? "https" : "http",
      dst_ip: "192.0.2.10",
      dst_port: port,
      url,
      method: "GET",
      policy: "deny",
      reason: "no matching rule",
      audit: true,
      ...p,
    });
  }
  const hosts = suggestPolicy(events(w), { hosts: true, scope: "none" });
  assert.match(hosts, /^mirror\.example\.com:80\|443\|8443\s{2}# step __run, \/usr\/bin\/curl$/m);
  assert.deepEqual(blockedByReplay(w, hosts), []);
  const urls = suggestPolicy(events(w), { scope: "none" });
  assert.match(urls, /^GET http:\/\/mirror\.example\.com\/a\s{2}#/m);
  assert.match(urls, /^GET https:\/\/mirror\.example\.com\/b\s{2}#/m);
  assert.match(urls, /^GET https:\/\/mirror\.example\.com:8443\/c\s{2}#/m);
  assert.deepEqual(blockedByReplay(w, urls), []);
});

Deno.test("suggest: paths no URL rule can match fall back to a host rule; odd values are quoted", () => {
  const w = new LogWriter();
  const p = { exe: "/opt/my tool/bin/run[1]", cgroup: "/user.slice/user 1001.slice", step: "__run" };
  w.add({
    type: "https",
    dst_ip: "192.0.2.20",
    dst_port: 443,
    url: "https://cdn.example.com/a/../b",
    method: "GET",
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...p,
  });
  w.add({
    type: "https",
    dst_ip: "192.0.2.20",
    dst_port: 443,
    url: "https://cdn.example.com/x",
    method: "PROPFIND",
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...p,
  });
  const text = suggestPolicy(events(w));
  assert.match(text, /^\[step=__run cgroup="\/user\.slice\/user 1001\.slice"\]$/m);
  assert.match(text, /^cdn\.example\.com exe="\/opt\/my tool\/bin\/run\[1\]"\s{2}#/m);
  assert.match(text, /^\* https:\/\/cdn\.example\.com\/x exe=/m, "an unknown method needs *");
  assert.deepEqual(blockedByReplay(w, text), []);
});

Deno.test("suggest: an empty log gives a valid policy that is just []", () => {
  const text = suggestPolicy([]);
  assert.ok(text.endsWith("\n[]\n"));
  assert.deepEqual(validatePolicy(text, suggestionPolicyOptions()).errors, []);
  assert.equal(parsePolicy(text, suggestionPolicyOptions()).rules.filter((r) => r.line > 0).length, 0);
});

Deno.test("suggest: comments cannot break a line; TLS without SNI uses the log's DNS answer (never passthrough)", () => {
  const w = new LogWriter();
  const p = { exe: "/usr/bin/tool\u2028x", cgroup: RUNNER, step: "__run\nevil" };
  w.resolve("nosni.example.com", ["192.0.2.30"], p);
  w.add({
    type: "https",
    dst_ip: "192.0.2.30",
    dst_port: 443,
    host: null,
    passthrough: true,
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...p,
  });
  const text = suggestPolicy(events(w));
  assert.deepEqual(blockedByReplay(w, text), []);
  assert.ok(text.split("\n").includes("[step=`__run?evil`]"), text);
  assert.ok(
    text.split("\n").includes("nosni.example.com exe=`/usr/bin/tool?x`  # step __run?evil, /usr/bin/tool?x"),
    text,
  );
});

Deno.test("collapsePaths and isVariableSegment", () => {
  for (
    const s of [
      "1842",
      "0e2d847",
      "sha256:1f6ab8d3c4e5f6a7b8c9",
      "4.18.2",
      "v1.2.3-rc.1",
      "123e4567-e89b-12d3-a456-426614174000",
      "AbCdEf0123456789xyzQWE",
    ]
  ) {
    assert.ok(isVariableSegment(s), s);
  }
  for (const s of ["", "repos", "jobs", "18-alpine", "express-4.18.2.tgz", "deadbeef", "v2"]) {
    assert.ok(!isVariableSegment(s), s);
  }
  const paths = new Map<string, { methods: Set<string>; sources: Set<string> }>();
  const add = (path: string, method: string) =>
    paths.set(path, { methods: new Set([method]), sources: new Set([method]) });
  add("/items/1/x", "GET");
  add("/items/2/x", "PUT");
  add("/items/3/y", "GET");
  add("/a/b", "GET");
  add("/a/c", "GET");
  const result = collapsePaths(paths).map((r) => `${[...r.methods].sort().join("|")} ${r.pattern}`).sort();
  assert.deepEqual(result, ["GET /a/b", "GET /a/c", "GET /items/3/y", "GET|PUT /items/*/x"]);
});

Deno.test("parseScope", () => {
  assert.equal(parseScope("auto"), "auto");
  assert.equal(parseScope("none"), "none");
  assert.deepEqual(parseScope("exe,step,exe"), ["exe", "step"]);
  assert.throws(() => parseScope("step,user"), /Cannot use scope "step,user": "user" is not/);
});

Deno.test("suggest --scope step: one rule per target for all processes of a step", () => {
  const text = suggestPolicy(events(ciJobLog()), { scope: ["step"] });
  assert.doesNotMatch(text, /exe=/);
  assert.match(text, /^\[step=__actions_checkout\]$/m);
  assert.doesNotMatch(text, /action=/);
  void CHECKOUT;
  void DOCKERD;
});
