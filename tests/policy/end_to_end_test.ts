// End-to-end: policy text → parsePolicy → Policy.match / Enforcer.decide.
import assert from "node:assert/strict";
import { DnsCache, Enforcer, parsePolicy } from "../../src/policy/mod.ts";
import type { ConnectionEvent } from "../../src/policy/mod.ts";

const https = (host: string, extra: Partial<ConnectionEvent> = {}): ConnectionEvent => ({
  type: "https",
  dst_ip: "140.82.112.3",
  dst_port: 443,
  host,
  ...extra,
});

Deno.test("e2e: URL-base header and path rules", () => {
  const policy = parsePolicy("[https://api.x.com/v1/]\nGET|POST /repos/*\n/users/me\n");
  const request = (path: string, method = "GET"): ConnectionEvent => ({
    type: "https",
    dst_ip: "1.2.3.4",
    dst_port: 443,
    url: `https://api.x.com${path}`,
    method,
  });
  assert.equal(policy.match(request("/v1/repos/a/b", "POST"))?.index, 0);
  assert.equal(policy.match(request("/v1/users/me"))?.index, 1);
  assert.equal(policy.match(request("/v1/users/me", "POST")), undefined);
  assert.equal(policy.match(request("/v2/repos/a")), undefined);
  assert.equal(policy.match(request("/v1/repos/../admin")), undefined);
});

Deno.test("e2e: header port carries to network rules ([http://a.com] then b.com ⇒ port 80)", () => {
  const policy = parsePolicy("[http://a.com]\nb.com\n");
  assert.equal(policy.match({ type: "http", dst_ip: "1.1.1.1", dst_port: 80, host: "b.com" })?.index, 0);
  assert.equal(policy.match({ type: "https", dst_ip: "1.1.1.1", dst_port: 443, host: "b.com" }), undefined);
});

Deno.test("e2e: DNS dual check with a udp resolver rule and x.com:22", () => {
  const policy = parsePolicy("127.0.0.53:53/udp\nx.com:22\n8.8.8.8:53\n");
  const query = (name: string, dst = "127.0.0.53"): ConnectionEvent => ({
    type: "dns",
    dst_ip: dst,
    dst_port: 53,
    name,
  });
  assert.equal(policy.match(query("x.com"))?.index, 1);
  assert.equal(policy.match(query("y.com")), undefined);
  assert.equal(policy.match(query("x.com", "8.8.8.8")), undefined);
  const enforcer = new Enforcer(policy);
  assert.equal(enforcer.decide(query("x.com", "8.8.8.8")).reason, "resolver not allowed");
  assert.equal(enforcer.decide(query("y.com")).reason, "name not allowed");
});

Deno.test("e2e: header attributes gate the resolver ([:53/udp exe=/usr/bin/dig])", () => {
  const policy = parsePolicy("[:53/udp exe=/usr/bin/dig]\n127.0.0.53\n[]\ndns:example.com\n");
  const query: ConnectionEvent = { type: "dns", dst_ip: "127.0.0.53", dst_port: 53, name: "example.com" };
  assert.equal(policy.match(query), undefined);
  assert.equal(policy.match({ ...query, exe: "/usr/bin/dig" })?.index, 1);
});

Deno.test("e2e: runner built-ins come first and user rules get the runner cgroup", () => {
  const policy = parsePolicy("github.com\ndocker.io cgroup=@docker\n", { runner: true });
  const runner = "/system.slice/hosted-compute-agent.service";
  assert.equal(policy.rules.length, 7);
  assert.equal(policy.match(https("github.com", { cgroup: runner }))?.index, 5);
  assert.equal(policy.match(https("github.com")), undefined);
  assert.equal(policy.match(https("github.com", { cgroup: "/system.slice/docker-1.scope" })), undefined);
  assert.equal(policy.match(https("docker.io", { cgroup: "/system.slice/docker-1.scope" }))?.index, 6);
  assert.equal(
    policy.match({ type: "dns", dst_ip: "127.0.0.53", dst_port: 53, name: "github.com", cgroup: runner })
      ?.index,
    5,
  );
  const watchdog = https("hosted-compute-watchdog-prod-eus.githubapp.com", { cgroup: runner });
  assert.equal(policy.match(watchdog), undefined);
  assert.equal(policy.match({ ...watchdog, exe: "/tmp/provjobd7" })?.index, 4);
});

Deno.test("e2e: Enforcer with passthrough, insecure and the DNS cache", () => {
  const policy = parsePolicy(
    "github.com passthrough\n*.corp.com insecure\nhttps://api.example.com/v1/*\ndb.internal.com:5432\n",
  );
  const cache = new DnsCache();
  const enforcer = new Enforcer(policy, { dnsCache: cache, corroborate: true });
  enforcer.recordDnsResponse("github.com", ["140.82.112.3"], 120);
  assert.equal(enforcer.decide(https("github.com"), { mitm: true }).passthrough, true);
  assert.equal(enforcer.decide(https("a.corp.com"), { mitm: true }).passthrough, false);
  assert.equal(
    enforcer.decide(https("a.corp.com", { dst_ip: "140.82.112.3" }), { mitm: true }).insecure,
    false,
  );
  enforcer.recordDnsResponse("a.corp.com", ["10.1.1.1"], 120);
  assert.equal(enforcer.decide(https("a.corp.com", { dst_ip: "10.1.1.1" }), { mitm: true }).insecure, true);
  assert.equal(enforcer.decide(https("api.example.com"), { mitm: true }).allowed, true);
  assert.equal(enforcer.decide(https("api.example.com"), { mitm: false }).allowed, false);
  enforcer.recordDnsResponse("db.internal.com.", ["10.9.9.9"], 30);
  const tcp = enforcer.decide({ type: "tcp", dst_ip: "10.9.9.9", dst_port: 5432 });
  assert.deepEqual([tcp.allowed, tcp.hostname, tcp.index], [true, "db.internal.com", 3]);
});

Deno.test("e2e: audit mode over a parsed policy", () => {
  const policy = parsePolicy("github.com\n");
  const audit = new Enforcer(policy, { audit: true });
  const denied = audit.decide(https("evil.com"));
  assert.deepEqual([denied.allowed, denied.policy, denied.reason], [true, "deny", "no matching rule"]);
  assert.equal(audit.decide(https("github.com")).policy, "allow");
});
