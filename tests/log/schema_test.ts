import assert from "node:assert/strict";
import { type ConnectionLogEvent, formatConnectionLine } from "../../src/log/connection_log.ts";
import { type Schema, validate } from "../helpers/json_schema.ts";
import { testWhen } from "../helpers/requirements.ts";

const schema: Schema = JSON.parse(
  await Deno.readTextFile(new URL("../../src/log/schema.json", import.meta.url)),
);
const TS = new Date("2026-02-18T10:30:45.123Z");
const base = { ts: TS, dst_ip: "140.82.112.3", dst_port: 443, src_port: 51234 } as const;
const who = {
  pid: 1234,
  exe: "/usr/bin/curl",
  cmdline: ["curl", "https://github.com"],
  cgroup: "/user.slice",
  step: "__run_2",
  action: "__run",
};

/** One or more realistic events per line type, allowed and denied. */
const EVENTS: Record<string, ConnectionLogEvent> = {
  http_allow: {
    ...base,
    type: "http",
    dst_port: 80,
    url: "http://example.com/a?b=1",
    method: "GET",
    policy: "allow",
    rule: "example.com",
    line: 1,
    ...who,
  },
  http_deny_audit: {
    ...base,
    type: "http",
    url: "http://example.com/",
    method: "POST",
    policy: "deny",
    reason: "no rule matched",
    audit: true,
  },
  https_request_insecure: {
    ...base,
    type: "https",
    url: "https://github.com/o/r",
    method: "GET",
    policy: "allow",
    rule: "github.com",
    line: 0,
    insecure: true,
    github_token: true,
  },
  https_tls_deny: { ...base, type: "https", host: "evil.example", policy: "deny", reason: "no rule matched" },
  https_passthrough: {
    ...base,
    type: "https",
    host: "pinned.example",
    policy: "allow",
    rule: "pinned.example passthrough",
    line: 4,
    passthrough: true,
  },
  https_tls_error_no_sni: {
    ...base,
    type: "https",
    host: null,
    policy: "allow",
    rule: "1.2.3.4",
    line: 2,
    error: "tls_client_rejected_ca",
  },
  https_upstream_failed: {
    ...base,
    type: "https",
    url: "https://self-signed.example/",
    method: "GET",
    policy: "allow",
    rule: "self-signed.example",
    line: 5,
    error: "upstream_tls_failed",
  },
  https_security_block: {
    ...base,
    type: "https",
    url: "https://registry.npmjs.org/evil/-/evil-1.0.0.tgz",
    method: "GET",
    policy: "deny",
    reason: "package flagged: malware",
    security_block: true,
    purl: "pkg:npm/evil@1.0.0",
    reasons: ["malware"],
  },
  tcp_with_host: {
    ...base,
    type: "tcp",
    dst_port: 22,
    host: "github.com",
    policy: "allow",
    rule: "github.com:22",
    line: 6,
    ...who,
    image: "ubuntu:24.04",
  },
  tcp_unknown_destination: {
    type: "tcp",
    ts: TS,
    dst_ip: "unknown",
    policy: "deny",
    reason: "original destination unknown",
  },
  udp_deny: { ...base, type: "udp", dst_port: 123, policy: "deny", reason: "no rule matched" },
  dns_allow: {
    ...base,
    type: "dns",
    dst_ip: "127.0.0.53",
    dst_port: 53,
    name: "github.com",
    policy: "allow",
    rule: "github.com",
    line: 1,
  },
  dns_no_question: { ...base, type: "dns", dst_port: 53, name: "", policy: "deny", reason: "no question" },
  dns_response: {
    ...base,
    type: "dns_response",
    dst_port: 53,
    name: "github.com",
    answers: ["140.82.112.3"],
    ttl: 60,
    policy: "allow",
    rule: "github.com",
    line: 1,
  },
  dns_response_empty: {
    ...base,
    type: "dns_response",
    dst_port: 53,
    name: "nx.example",
    answers: [],
    ttl: 0,
    policy: "allow",
    rule: "*.example",
    line: 2,
  },
  sudo: {
    ts: TS,
    type: "sudo",
    pwd: "/home/runner/work",
    target_user: "root",
    pid: 99,
    cmdline: ["apt-get", "install", "-y", "jq"],
  },
};

for (const [name, event] of Object.entries(EVENTS)) {
  Deno.test(`schema: formatConnectionLine output for ${name} is valid`, () => {
    const line = formatConnectionLine(event);
    const errors = validate(schema, JSON.parse(line));
    assert.deepEqual(errors, [], line);
  });
}

Deno.test("schema: every line type is covered above", () => {
  const types = new Set(Object.values(EVENTS).map((e) => e.type));
  assert.deepEqual([...types].sort(), ["dns", "dns_response", "http", "https", "sudo", "tcp", "udp"]);
});

/** Deliberately bad lines (raw objects, as a buggy writer or a hand-edited file could produce). */
const BAD: Array<[string, Record<string, unknown>, RegExp]> = [
  ["missing type", { ts: "2026-02-18T10:30:45.123Z" }, /missing type/],
  ["bad ts", {
    ts: "2026-02-18 10:30:45",
    type: "udp",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /\$\.ts: does not match/],
  ["unknown type", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "icmp",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /\$\.type: not one of/],
  ["extra key", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
    extra: 1,
  }, /unexpected property extra/],
  ["port range", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    dst_ip: "1.1.1.1",
    dst_port: 70000,
    src_port: 1,
    policy: "allow",
  }, /dst_port: above 65535/],
  ["port not integer", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    dst_ip: "1.1.1.1",
    dst_port: 1.5,
    src_port: 1,
    policy: "allow",
  }, /expected integer/],
  ["deny without reason", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "deny",
  }, /missing reason/],
  [
    "non-sudo without dst",
    { ts: "2026-02-18T10:30:45.123Z", type: "tcp", policy: "allow" },
    /missing dst_ip/,
  ],
  [
    "sudo with policy",
    { ts: "2026-02-18T10:30:45.123Z", type: "sudo", cmdline: ["x"], policy: "allow" },
    /must not match/,
  ],
  ["sudo without cmdline", { ts: "2026-02-18T10:30:45.123Z", type: "sudo" }, /missing cmdline/],
  ["sudo empty cmdline", { ts: "2026-02-18T10:30:45.123Z", type: "sudo", cmdline: [] }, /fewer than 1 items/],
  ["dns without name", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "dns",
    dst_ip: "1.1.1.1",
    dst_port: 53,
    src_port: 1,
    policy: "allow",
  }, /missing name/],
  ["dns_response without answers", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "dns_response",
    name: "x",
    dst_ip: "1.1.1.1",
    dst_port: 53,
    src_port: 1,
    policy: "allow",
  }, /missing answers/],
  ["url on tcp", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "tcp",
    url: "http://x/",
    method: "GET",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /type: not one of/],
  ["url without method", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "http",
    url: "http://x/",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /missing method/],
  ["url scheme", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "http",
    url: "ftp://x/",
    method: "GET",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /url: does not match/],
  ["rule without line", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    rule: "x",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /missing line/],
  ["line without rule", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    line: 1,
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /missing rule/],
  ["security_block without purl", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "https",
    security_block: true,
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /missing purl/],
  ["audit false", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    audit: false,
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /audit: must be true/],
  ["empty method", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "http",
    url: "http://x/",
    method: "",
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /method: shorter than 1/],
  ["bad dst_ip", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    dst_ip: "::1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /dst_ip: does not match/],
  ["pid 0", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "udp",
    pid: 0,
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /pid: below 1/],
  ["purl ecosystem", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "https",
    security_block: true,
    purl: "pkg:gem/x",
    reasons: [],
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /purl: does not match/],
  ["answers not strings", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "dns_response",
    name: "x",
    answers: [1],
    ttl: 1,
    dst_ip: "1.1.1.1",
    dst_port: 53,
    src_port: 1,
    policy: "allow",
  }, /answers\[0\]: expected string/],
  ["host number", {
    ts: "2026-02-18T10:30:45.123Z",
    type: "https",
    host: 5,
    dst_ip: "1.1.1.1",
    dst_port: 1,
    src_port: 1,
    policy: "allow",
  }, /host: expected string\|null/],
];

Deno.test("schema: deliberately bad lines are rejected with the expected violation", () => {
  for (const [name, line, expected] of BAD) {
    const errors = validate(schema, line);
    assert.ok(errors.some((e) => expected.test(e)), `${name}: ${JSON.stringify(errors)}`);
  }
});

const SPEC_URL = new URL("../../../shared/spec/events.md", import.meta.url);
const spec = await Deno.readTextFile(SPEC_URL).catch(() => undefined);

testWhen(
  spec === undefined ? `needs ${SPEC_URL.pathname} (shared/ beside the repository)` : undefined,
  "schema file matches events.md §6 exactly",
  () => {
    const m = /## 6\. JSON Schema[\s\S]*?```json\n([\s\S]*?)```/.exec(spec!);
    assert.ok(m, "events.md has a §6 JSON block");
    assert.deepEqual(schema, JSON.parse(m[1]));
  },
);

Deno.test("validator: unsupported keywords and unresolvable refs are errors, not silent passes", () => {
  assert.throws(() => validate({ type: "object", format: "email" }, {}), /unsupported keyword format/);
  assert.throws(() => validate({ $ref: "#/$defs/nope" }, 1), /Cannot resolve/);
  assert.deepEqual(validate({ anyOf: [{ type: "string" }, { type: "integer" }] }, 3), []);
  assert.equal(validate({ anyOf: [{ type: "string" }, { type: "integer" }] }, 3.5).length, 1);
  assert.deepEqual(validate({ if: { const: 1 }, then: { const: 2 }, else: { const: 3 } }, 3), []);
  assert.equal(validate({ if: { const: 1 }, then: { const: 2 }, else: { const: 4 } }, 3).length, 1);
});
