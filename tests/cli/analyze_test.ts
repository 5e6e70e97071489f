import assert from "node:assert/strict";
import { runCli, tempFiles } from "./run_cli.ts";

const RUNNER = "/system.slice/hosted-compute-agent.service";
let clock = 0;
/** One log line as the daemon writes it (events.md §3), with a fresh timestamp and client port. */
function line(fields: Record<string, unknown>): string {
  clock++;
  const ts = new Date(Date.UTC(2026, 1, 18, 10, 30, 0, clock * 10)).toISOString();
  const { type, ...rest } = fields;
  const base: Record<string, unknown> = { ts, type };
  if (type !== "sudo") base.src_port = 40000 + clock;
  return JSON.stringify({ ...base, ...rest });
}

const POLICY = `# CI policy
github.com
GET https://api.example.com/v1/*
ssh.example.com:22
8.8.8.8:53/udp
bad.com:0
`;

const ssh = { exe: "/usr/bin/ssh", cgroup: RUNNER, step: "__run_2" };
const curl = {
  exe: "/usr/bin/curl",
  cgroup: RUNNER,
  step: "__run_3",
  cmdline: ["curl", "-s", "https://api.example.com/v1/items"],
};
const LOG = [
  line({
    type: "dns",
    dst_ip: "8.8.8.8",
    dst_port: 53,
    name: "ssh.example.com",
    policy: "allow",
    rule: "ssh.example.com:22",
    line: 4,
    ...ssh,
  }),
  line({
    type: "dns_response",
    dst_ip: "8.8.8.8",
    dst_port: 53,
    name: "ssh.example.com",
    answers: ["203.0.113.10"],
    ttl: 60,
    policy: "allow",
    ...ssh,
  }),
  // Resolved above: the DNS cache names the IP, so the host rule allows it.
  line({
    type: "tcp",
    dst_ip: "203.0.113.10",
    dst_port: 22,
    host: "ssh.example.com",
    policy: "allow",
    rule: "ssh.example.com:22",
    line: 4,
    ...ssh,
  }),
  // Logged with the same name but an IP nothing resolved to: only the IP counts.
  line({
    type: "tcp",
    dst_ip: "203.0.113.99",
    dst_port: 22,
    host: "ssh.example.com",
    policy: "allow",
    rule: "ssh.example.com:22",
    line: 4,
    ...ssh,
  }),
  line({
    type: "https",
    dst_ip: "93.184.215.14",
    dst_port: 443,
    url: "https://api.example.com/v1/items?page=***",
    method: "GET",
    policy: "allow",
    ...curl,
  }),
  line({
    type: "https",
    dst_ip: "93.184.215.14",
    dst_port: 443,
    url: "https://api.example.com/v1/items?page=***&x=***",
    method: "GET",
    policy: "allow",
    ...curl,
  }),
  line({
    type: "https",
    dst_ip: "93.184.215.14",
    dst_port: 443,
    url: "https://api.example.com/v1/items",
    method: "GET",
    policy: "allow",
    ...curl,
    step: "__run_4",
  }),
  line({
    type: "https",
    dst_ip: "93.184.215.14",
    dst_port: 443,
    url: "https://api.example.com/v1/items",
    method: "POST",
    policy: "deny",
    reason: "no matching rule",
    ...curl,
  }),
  "this is not json",
  line({
    type: "https",
    dst_ip: "198.51.100.5",
    dst_port: 443,
    host: "self-signed.example",
    policy: "deny",
    reason: "no matching rule",
    error: "tls_client_rejected_ca",
    exe: "/usr/bin/python3",
    cgroup: RUNNER,
  }),
  line({
    type: "https",
    dst_ip: "140.82.112.4",
    dst_port: 443,
    host: "github.com",
    policy: "allow",
    rule: "github.com",
    line: 2,
    exe: "/usr/bin/git",
    cgroup: RUNNER,
  }),
  line({
    type: "https",
    dst_ip: "140.82.112.4",
    dst_port: 443,
    host: "github.com",
    policy: "allow",
    rule: "github.com",
    line: 2,
    exe: "/usr/bin/git",
    cgroup: RUNNER,
  }),
  line({
    type: "udp",
    dst_ip: "9.9.9.9",
    dst_port: 53,
    policy: "deny",
    reason: "no matching rule",
    exe: "/usr/bin/dig",
    cgroup: RUNNER,
  }),
  line({ type: "sudo", cmdline: ["apt-get", "install", "-y", "jq"] }),
  line({
    type: "dns",
    dst_ip: "127.0.0.53",
    dst_port: 53,
    name: "github.com",
    policy: "allow",
    rule: "github.com",
    line: 2,
    exe: "/usr/bin/git",
    cgroup: RUNNER,
  }),
  line({
    type: "https",
    dst_ip: "140.82.112.4",
    dst_port: 443,
    host: "github.com",
    policy: "allow",
    exe: "/usr/bin/git",
  }),
].join("\n") + "\n";

type Finding = {
  destination: string;
  count: number;
  reason?: string;
  rule?: string;
  rule_line?: number;
  first_line: number;
  process: Record<string, unknown>;
};

Deno.test("analyze: blocked / allowed / failed, dedup counts, malformed line skipped, policy errors", async () => {
  const t = await tempFiles({ "policy.txt": POLICY, "log.jsonl": LOG });
  try {
    const r = await runCli(["analyze", "policy.txt", "--log", "log.jsonl", "-v"], { cwd: t.dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^policy\.txt:6:9: error: port 0 is outside 1\.\.65535\nbad\.com:0\n {8}\^$/m);
    assert.match(r.stderr, /^log\.jsonl:9: warning: skipped line: not valid JSON$/m);
    const out = r.stdout.split("\n");
    const section = (title: string) => {
      const start = out.findIndex((l) => l.startsWith(`${title} (`));
      if (start === -1) return [];
      const rows: string[] = [];
      for (let i = start + 1; i < out.length && out[i].startsWith("  "); i++) rows.push(out[i]);
      assert.equal(out[start], `${title} (${rows.length})`);
      return rows;
    };
    const blocked = section("BLOCKED");
    assert.deepEqual(blocked, [
      `  tcp ssh.example.com:22 (203.0.113.99)  exe=/usr/bin/ssh cgroup=${RUNNER} step=__run_2  ×1  no matching rule`,
      `  POST https://api.example.com/v1/items  exe=/usr/bin/curl cgroup=${RUNNER} step=__run_3 cmdline="curl -s https://api.example.com/v1/items"  ×1  no matching rule`,
      `  udp 9.9.9.9:53  exe=/usr/bin/dig cgroup=${RUNNER}  ×1  no matching rule`,
      `  https github.com:443  exe=/usr/bin/git  ×1  no matching rule`,
    ]);
    const allowed = section("ALLOWED");
    assert.equal(allowed.length, 6);
    assert.ok(
      allowed.includes(
        `  tcp ssh.example.com:22 (203.0.113.10)  exe=/usr/bin/ssh cgroup=${RUNNER} step=__run_2  ×1  line 4: ssh.example.com:22`,
      ),
    );
    assert.ok(
      allowed.some((l) =>
        l.startsWith("  GET https://api.example.com/v1/items ") && l.includes("step=__run_3") &&
        l.endsWith("×2  line 3: GET https://api.example.com/v1/*")
      ),
    );
    assert.ok(
      allowed.some((l) => l.includes("step=__run_4") && l.includes("×1")),
      "another step is another entry",
    );
    assert.ok(
      allowed.some((l) =>
        l.startsWith("  https github.com:443  exe=/usr/bin/git cgroup=") &&
        l.endsWith("×2  line 2: github.com")
      ),
    );
    assert.ok(
      allowed.some((l) =>
        l.startsWith("  dns github.com via 127.0.0.53:53 ") && l.endsWith("line 2: github.com")
      ),
    );
    assert.ok(
      allowed.some((l) =>
        l.startsWith("  dns ssh.example.com via 8.8.8.8:53 ") && l.endsWith("line 4: ssh.example.com:22")
      ),
    );
    assert.deepEqual(section("FAILED"), [
      `  https self-signed.example:443  exe=/usr/bin/python3 cgroup=${RUNNER}  ×1  tls_client_rejected_ca`,
    ]);
    assert.equal(out.at(-2), "11 unique: 6 allowed, 4 blocked, 1 failed");
    assert.doesNotMatch(r.stdout, /sudo|dns_response|apt-get/);

    const quiet = await runCli(["analyze", "policy.txt", "--log", "log.jsonl"], { cwd: t.dir });
    assert.doesNotMatch(quiet.stdout, /ALLOWED/);
    assert.match(quiet.stdout, /^BLOCKED \(4\)$/m);
  } finally {
    await t.cleanup();
  }
});

Deno.test("analyze: --json has the same findings as objects", async () => {
  const t = await tempFiles({ "policy.txt": POLICY, "log.jsonl": LOG });
  try {
    const r = await runCli(["analyze", "policy.txt", "--log=log.jsonl", "--json"], { cwd: t.dir });
    assert.equal(r.code, 1);
    const result = JSON.parse(r.stdout);
    assert.deepEqual(result.summary, { unique: 11, allowed: 6, blocked: 4, failed: 1 });
    assert.equal(result.policy_errors, 1);
    assert.deepEqual(result.skipped, [{ line: 9, reason: "not valid JSON" }]);
    const get = result.allowed.find((f: Finding) =>
      f.destination === "GET https://api.example.com/v1/items" && f.process.step === "__run_3"
    );
    assert.equal(get.count, 2);
    assert.equal(get.first_line, 5);
    assert.equal(get.rule, "GET https://api.example.com/v1/*");
    assert.equal(get.rule_line, 3);
    assert.deepEqual(get.process.cmdline, curl.cmdline);
    assert.deepEqual(result.failed.map((f: Finding) => f.reason), ["tls_client_rejected_ca"]);
    assert.deepEqual(result.blocked.map((f: Finding) => f.first_line), [4, 8, 13, 16]);
  } finally {
    await t.cleanup();
  }
});

Deno.test("analyze: only dns_response and verified https request lines feed the DNS cache", async () => {
  const policy =
    "GET|POST https://api.example.com/*\nGET https://other.example/* insecure\napi.example.com:8443\nother.example:8443\nlogged.example:8443\n";
  const log = [
    line({
      type: "https",
      dst_ip: "192.0.2.1",
      dst_port: 443,
      url: "https://api.example.com/a",
      method: "GET",
      policy: "allow",
    }),
    line({
      type: "https",
      dst_ip: "192.0.2.2",
      dst_port: 443,
      url: "https://other.example/a",
      method: "GET",
      insecure: true,
      policy: "allow",
    }),
    line({
      type: "https",
      dst_ip: "192.0.2.3",
      dst_port: 443,
      url: "https://api.example.com/b",
      method: "GET",
      error: "upstream_tls_failed",
      policy: "allow",
    }),
    line({ type: "tcp", dst_ip: "192.0.2.4", dst_port: 8443, host: "logged.example", policy: "allow" }),
    line({ type: "tcp", dst_ip: "192.0.2.1", dst_port: 8443, policy: "allow" }),
    line({ type: "tcp", dst_ip: "192.0.2.2", dst_port: 8443, policy: "allow" }),
    line({ type: "tcp", dst_ip: "192.0.2.3", dst_port: 8443, policy: "allow" }),
    line({ type: "tcp", dst_ip: "192.0.2.4", dst_port: 8443, policy: "allow" }),
  ].join("\n");
  const t = await tempFiles({ "p.txt": policy, "log.jsonl": log });
  try {
    const r = await runCli([
      "analyze",
      "--no-defaults",
      "--no-runner-cgroup",
      "p.txt",
      "--log",
      "log.jsonl",
      "--json",
    ], { cwd: t.dir });
    assert.equal(r.code, 1, r.stderr);
    const result = JSON.parse(r.stdout);
    const tcp = (list: Finding[]) =>
      list.filter((f) => f.destination.startsWith("tcp ")).map((f) => f.destination);
    assert.deepEqual(tcp(result.allowed), ["tcp 192.0.2.1:8443"]);
    assert.deepEqual(tcp(result.blocked), [
      "tcp logged.example:8443 (192.0.2.4)",
      "tcp 192.0.2.2:8443",
      "tcp 192.0.2.3:8443",
      "tcp 192.0.2.4:8443",
    ]);
    // The insecure request was judged as plain HTTP against the insecure URL rule.
    assert.ok(
      result.allowed.some((f: Finding) =>
        f.destination === "GET https://other.example/a" && f.rule_line === 2
      ),
    );
    assert.deepEqual(result.failed.map((f: Finding) => f.reason), ["upstream_tls_failed"]);
  } finally {
    await t.cleanup();
  }
});

Deno.test("analyze: a workflow's policies are used together; all allowed ⇒ 0", async () => {
  const wf = `jobs:
  build:
    steps:
      - name: One
        uses: org/egress@v1
        with:
          policy: |
            [:22]
            ssh.example.com
      - name: Two
        uses: org/egress@v1
        with:
          policy: |
            github.com
            8.8.8.8:53/udp
`;
  const log = [
    line({
      type: "https",
      dst_ip: "140.82.112.4",
      dst_port: 443,
      host: "github.com",
      policy: "allow",
      exe: "/usr/bin/git",
      cgroup: RUNNER,
    }),
    line({
      type: "dns",
      dst_ip: "8.8.8.8",
      dst_port: 53,
      name: "ssh.example.com",
      policy: "allow",
      cgroup: RUNNER,
    }),
    line({
      type: "dns_response",
      dst_ip: "8.8.8.8",
      dst_port: 53,
      name: "ssh.example.com",
      answers: ["203.0.113.10"],
      ttl: 30,
      policy: "allow",
      cgroup: RUNNER,
    }),
    line({ type: "tcp", dst_ip: "203.0.113.10", dst_port: 22, policy: "allow", cgroup: RUNNER }),
  ].join("\n");
  const t = await tempFiles({ "ci.yml": wf, "log.jsonl": log });
  try {
    const r = await runCli(["analyze", "ci.yml", "--log", "log.jsonl", "-v"], { cwd: t.dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /^ {2}https github\.com:443 .*×1 {2}line 1: github\.com \[jobs\.build\.steps\[1\] \(Two\)\]$/m,
    );
    assert.match(
      r.stdout,
      /^ {2}tcp 203\.0\.113\.10:22 .*line 2: ssh\.example\.com \[jobs\.build\.steps\[0\] \(One\)\]$/m,
    );
    assert.match(r.stdout, /^ {2}dns ssh\.example\.com via 8\.8\.8\.8:53 .*line 2: ssh\.example\.com/m);
    assert.match(r.stdout, /^3 unique: 3 allowed, 0 blocked, 0 failed$/m);
    // The header context of the first policy does not leak into the second: github.com stays on 443.
    const tcp = await tempFiles({
      "l.jsonl": line({
        type: "https",
        dst_ip: "140.82.112.4",
        dst_port: 22,
        host: "github.com",
        policy: "deny",
        reason: "no matching rule",
        cgroup: RUNNER,
      }),
    });
    try {
      const leak = await runCli(["analyze", `${t.dir}/ci.yml`, "--log", `${tcp.dir}/l.jsonl`], {
        cwd: t.dir,
      });
      assert.equal(leak.code, 1);
      assert.match(leak.stdout, /^1 unique: 0 allowed, 1 blocked, 0 failed$/m);
    } finally {
      await tcp.cleanup();
    }
  } finally {
    await t.cleanup();
  }
});

Deno.test("analyze: empty log ⇒ 0; missing log or --log ⇒ 2", async () => {
  const t = await tempFiles({ "p.txt": "github.com\n", "empty.jsonl": "" });
  try {
    const empty = await runCli(["analyze", "p.txt", "--log", "empty.jsonl"], { cwd: t.dir });
    assert.equal(empty.code, 0);
    assert.match(empty.stdout, /^0 unique: 0 allowed, 0 blocked, 0 failed$/m);
    const missing = await runCli(["analyze", "p.txt", "--log", "nope.jsonl"], { cwd: t.dir });
    assert.equal(missing.code, 2);
    assert.equal(missing.stderr, "egress analyze: Cannot read log nope.jsonl: no such file\n");
    const noLog = await runCli(["analyze", "p.txt"], { cwd: t.dir });
    assert.equal(noLog.code, 2);
    assert.equal(noLog.stderr, "egress analyze: --log FILE is required\n");
    const noPolicy = await runCli(["analyze", "nope.txt", "--log", "empty.jsonl"], { cwd: t.dir });
    assert.equal(noPolicy.code, 2);
    assert.equal(noPolicy.stderr, "egress analyze: Cannot read nope.txt: no such file\n");
  } finally {
    await t.cleanup();
  }
});

Deno.test("analyze replay: TLS-stage lines without pre-match, dedup keys of every type, no IDNA in the cache", async () => {
  const { replay, dedupKey, toConnectionEvent } = await import("../../src/cli/analyze.ts");
  const { parseConnectionLog } = await import("../../src/cli/connection_log.ts");
  const { parsePolicy } = await import("../../src/policy/policy.ts");
  // A URL-only policy admits the handshake only with mitm (pre-match); a replay judges with mitm off.
  const tls = toConnectionEvent({
    type: "https",
    dst_ip: "192.0.2.1",
    dst_port: 443,
    host: "api.example.com",
  });
  assert.deepEqual(tls, {
    connection: { type: "https", dst_ip: "192.0.2.1", dst_port: 443, host: "api.example.com" },
    mitm: false,
  });
  const insecure = toConnectionEvent({
    type: "https",
    dst_ip: "192.0.2.1",
    dst_port: 443,
    url: "https://a.example/x",
    method: "POST",
    insecure: true,
    exe: "/bin/x",
  });
  assert.deepEqual(insecure.connection, {
    type: "http",
    dst_ip: "192.0.2.1",
    dst_port: 443,
    exe: "/bin/x",
    url: "https://a.example/x",
    method: "POST",
  });
  // tcp lines are judged by IP and the cache, never by the logged host.
  assert.equal(
    toConnectionEvent({ type: "tcp", dst_ip: "192.0.2.1", dst_port: 22, host: "x" }).connection.host,
    undefined,
  );

  // cli.md §analyze step 4.
  const key = (e: Record<string, unknown>) => JSON.parse(dedupKey(e as never)).slice(0, -6);
  assert.deepEqual(key({ type: "http", url: "http://a.com/x?q=***", method: "get" }), [
    "http",
    "GET",
    "http://a.com/x",
  ]);
  assert.deepEqual(key({ type: "https", host: "a.com", dst_ip: "1.1.1.1", dst_port: 443 }), [
    "https",
    "a.com",
    443,
  ]);
  assert.deepEqual(key({ type: "dns", name: "a.com", dst_ip: "8.8.8.8", dst_port: 53 }), [
    "dns",
    "a.com",
    "8.8.8.8",
    53,
  ]);
  assert.deepEqual(key({ type: "tcp", dst_ip: "1.1.1.1", dst_port: 22 }), ["tcp", "1.1.1.1", 22]);
  assert.deepEqual(key({ type: "udp", dst_ip: "1.1.1.1", dst_port: 123 }), ["udp", "1.1.1.1", 123]);
  assert.notEqual(
    dedupKey({ type: "tcp", dst_ip: "1.1.1.1", dst_port: 22, exe: "/a" }),
    dedupKey({ type: "tcp", dst_ip: "1.1.1.1", dst_port: 22, exe: "/b" }),
  );

  const policy = parsePolicy("GET https://api.example.com/*\nxn--bcher-kva.de:22\n");
  const log = parseConnectionLog([
    line({ type: "https", dst_ip: "192.0.2.1", dst_port: 443, host: "api.example.com", policy: "allow" }),
    // WHATWG URL parsing would turn this host into xn--bcher-kva.de; policy.md §10.1 has no IDNA.
    line({
      type: "https",
      dst_ip: "192.0.2.9",
      dst_port: 443,
      url: "https://bücher.de/",
      method: "GET",
      policy: "deny",
      reason: "no matching rule",
    }),
    line({ type: "tcp", dst_ip: "192.0.2.9", dst_port: 22, policy: "deny", reason: "no matching rule" }),
  ].join("\n"));
  assert.deepEqual(log.problems, []);
  const findings = replay(log.entries, policy, (index) => ({ rule: String(index), line: index + 1 }));
  assert.deepEqual(findings.map((f) => [f.destination, f.status, f.reason]), [
    ["https api.example.com:443", "blocked", "no matching rule"],
    ["GET https://bücher.de/", "blocked", "no matching rule"],
    ["tcp 192.0.2.9:22", "blocked", "no matching rule"],
  ]);
});

Deno.test("analyze: log fields cannot forge rows or send terminal escapes", async () => {
  const log = [
    line({
      type: "tcp",
      dst_ip: "192.0.2.7",
      dst_port: 22,
      policy: "deny",
      reason: "no matching rule",
      exe: "/tmp/x\nALLOWED (1)\n  tcp 1.1.1.1:22  ×1  line 1: all",
    }),
    line({
      type: "dns",
      dst_ip: "127.0.0.53",
      dst_port: 53,
      name: "a\u001b[2Jb.example\u202e",
      policy: "deny",
      reason: "name not allowed",
    }),
  ].join("\n");
  const t = await tempFiles({ "log.jsonl": log });
  try {
    const r = await runCli(["analyze", "--log", "log.jsonl"], { cwd: t.dir });
    assert.equal(r.code, 1, r.stderr);
    // deno-lint-ignore no-control-regex
    const unprintable = /[\u0000-\u0009\u000b-\u001f\u202e]/;
    assert.doesNotMatch(r.stdout, unprintable, "no control character but the line ends");
    const lines = r.stdout.trimEnd().split("\n");
    assert.deepEqual(lines.map((l) => l.slice(0, 9)), ["BLOCKED (", "  tcp 192", "  dns a\\u", "2 unique:"]);
    assert.match(lines[1], /exe=\/tmp\/x\\u000aALLOWED \(1\)\\u000a {2}tcp 1\.1\.1\.1:22/);
    assert.match(lines[2], /^ {2}dns a\\u001b\[2Jb\.example\\u202e via 127\.0\.0\.53:53 /);
  } finally {
    await t.cleanup();
  }
});
