import assert from "node:assert/strict";
import { Enforcer } from "../../src/policy/enforcer.ts";
import { Policy } from "../../src/policy/policy.ts";
import { DnsCache } from "../../src/policy/dns_cache.ts";
import type { ConnectionEvent, Rule, RuleType } from "../../src/policy/types.ts";

function rule(type: RuleType, target: string, extra: Partial<Rule> = {}): Rule {
  const request = type === "url" || type === "path";
  return {
    type,
    target,
    port: [443],
    protocol: "tcp",
    methods: request ? ["GET", "HEAD"] : null,
    url_base: null,
    attrs: {},
    line: 1,
    ...extra,
  };
}

const policy = (...rules: Rule[]) => new Policy(rules);
const IP = "140.82.112.3";
const tls = (host?: string, extra: Partial<ConnectionEvent> = {}): ConnectionEvent => ({
  type: "https",
  dst_ip: IP,
  dst_port: 443,
  ...(host === undefined ? {} : { host }),
  ...extra,
});
const request = (url: string, extra: Partial<ConnectionEvent> = {}): ConnectionEvent => ({
  type: "https",
  dst_ip: IP,
  dst_port: 443,
  url,
  method: "GET",
  ...extra,
});

Deno.test("https with SNI: generic match, rule and hostname reported", () => {
  const rules = [rule("host", "other.com"), rule("host", "github.com")];
  const decision = new Enforcer(policy(...rules)).decide(tls("GitHub.com."));
  assert.deepEqual(decision, {
    allowed: true,
    policy: "allow",
    rule: rules[1],
    index: 1,
    passthrough: false,
    insecure: false,
    hostname: "github.com",
    reason: "rule matched",
  });
  const denied = new Enforcer(policy(...rules)).decide(tls("gitlab.com"));
  assert.deepEqual(denied, {
    allowed: false,
    policy: "deny",
    passthrough: false,
    insecure: false,
    hostname: "gitlab.com",
    reason: "no matching rule",
  });
});

Deno.test("https with SNI: URL-only policy admits the handshake only with mitm (pre-match)", () => {
  const enforcer = new Enforcer(policy(rule("url", "https://api.github.com/repos/*", { methods: ["POST"] })));
  const withMitm = enforcer.decide(tls("api.github.com"), { mitm: true });
  assert.equal(withMitm.allowed, true);
  assert.equal(withMitm.index, 0);
  assert.equal(withMitm.insecure, false);
  assert.equal(withMitm.passthrough, false);
  assert.equal(enforcer.decide(tls("api.github.com")).reason, "no matching rule");
  assert.equal(enforcer.decide(tls("api.github.com"), { mitm: false }).allowed, false);
  // Pre-match still checks host, port, protocol and attributes.
  assert.equal(enforcer.decide(tls("github.com"), { mitm: true }).allowed, false);
  assert.equal(enforcer.decide(tls("api.github.com", { dst_port: 8443 }), { mitm: true }).allowed, false);
  const gated = new Enforcer(policy(rule("url", "https://*.github.com/x", { attrs: { exe: "*/git" } })));
  assert.equal(gated.decide(tls("api.github.com"), { mitm: true }).allowed, false);
  assert.equal(gated.decide(tls("api.github.com", { exe: "/usr/bin/git" }), { mitm: true }).allowed, true);
  const paths = new Enforcer(policy(rule("path", "/v1/*", { url_base: "https://api.x.com" })));
  assert.equal(paths.decide(tls("api.x.com"), { mitm: true }).allowed, true);
});

Deno.test("https with SNI: passthrough and insecure flags only with mitm; passthrough wins", () => {
  const rules = [
    rule("host", "github.com"),
    rule("host", "github.com", { passthrough: true }),
    rule("host", "github.com", { insecure: true }),
    rule("wildcard_host", "*.corp.com", { insecure: true }),
    rule("url", "https://self.signed.com/*", { insecure: true }),
  ];
  const enforcer = new Enforcer(policy(...rules));
  const passthrough = enforcer.decide(tls("github.com"), { mitm: true });
  assert.equal(passthrough.passthrough, true);
  assert.equal(passthrough.insecure, false);
  assert.equal(passthrough.index, 0); // first match reported
  assert.equal(enforcer.decide(tls("github.com")).passthrough, false);
  const insecure = enforcer.decide(tls("a.corp.com"), { mitm: true });
  assert.deepEqual([insecure.allowed, insecure.passthrough, insecure.insecure], [true, false, true]);
  const urlInsecure = enforcer.decide(tls("self.signed.com"), { mitm: true });
  assert.deepEqual([urlInsecure.allowed, urlInsecure.insecure, urlInsecure.index], [true, true, 4]);
  assert.equal(enforcer.decide(tls("self.signed.com"), { mitm: false }).allowed, false);
  // A flagged rule whose attributes do not match does not flag.
  const gated = new Enforcer(
    policy(rule("host", "a.com"), rule("host", "a.com", { passthrough: true, attrs: { exe: "/x" } })),
  );
  assert.equal(gated.decide(tls("a.com"), { mitm: true }).passthrough, false);
  assert.equal(gated.decide(tls("a.com", { exe: "/x" }), { mitm: true }).passthrough, true);
});

Deno.test("https with SNI: no DNS-cache fallback", () => {
  const cache = new DnsCache();
  cache.add("github.com", [IP], 300);
  const enforcer = new Enforcer(policy(rule("host", "github.com")), { dnsCache: cache });
  assert.equal(enforcer.decide(tls("evil.com")).allowed, false);
});

Deno.test("https without SNI: DNS-cache names (most recent first), else IP only; never passthrough", () => {
  const cache = new DnsCache();
  const rules = [
    rule("host", "a.com", { passthrough: true }),
    rule("host", "b.com", { insecure: true }),
    rule("cidr", "140.82.0.0/16", { port: [8443] }),
  ];
  const enforcer = new Enforcer(policy(...rules), { dnsCache: cache });
  assert.equal(enforcer.decide(tls()).reason, "no matching rule");
  enforcer.recordDnsResponse("A.com.", [IP], 300);
  const byName = enforcer.decide(tls(), { mitm: true });
  assert.deepEqual([byName.allowed, byName.hostname, byName.index, byName.passthrough], [
    true,
    "a.com",
    0,
    false,
  ]);
  enforcer.recordDnsResponse("b.com", [IP], 300);
  const recent = enforcer.decide(tls(), { mitm: true });
  assert.deepEqual([recent.hostname, recent.index, recent.insecure], ["b.com", 1, true]);
  // ip/cidr rules match with any name too; the hostname reported is the name tried.
  const ipWithName = enforcer.decide(tls(undefined, { dst_port: 8443 }));
  assert.deepEqual([ipWithName.allowed, ipWithName.hostname, ipWithName.index], [true, "b.com", 2]);
  const ipOnly = enforcer.decide(tls(undefined, { dst_port: 8443, dst_ip: "140.82.1.1" }));
  assert.deepEqual([ipOnly.allowed, ipOnly.hostname, ipOnly.index], [true, undefined, 2]);
  assert.equal("hostname" in ipOnly, false);
});

Deno.test("request events: SNI must equal the URL host", () => {
  const enforcer = new Enforcer(policy(rule("url", "https://a.com/*"), rule("host", "b.com")));
  assert.equal(enforcer.decide(request("https://a.com/x", { host: "a.com" })).allowed, true);
  assert.equal(enforcer.decide(request("https://A.com./x", { host: "a.COM" })).allowed, true);
  const mismatch = enforcer.decide(request("https://a.com/x", { host: "b.com" }));
  assert.deepEqual([mismatch.allowed, mismatch.reason], [false, "host does not match SNI"]);
  assert.equal(enforcer.decide(request("https://a.com/x")).allowed, true);
  assert.equal(enforcer.decide(request("https://a.com/x", { method: "POST" })).reason, "no matching rule");
});

Deno.test("https requests are not corroborated (the upstream certificate check does it)", () => {
  const enforcer = new Enforcer(policy(rule("url", "https://a.com/*")), { corroborate: true });
  assert.equal(enforcer.decide(request("https://a.com/x")).allowed, true);
});

Deno.test("http with corroboration: DNS cache or a matching ip/cidr rule corroborates", () => {
  const http = (url: string, extra: Partial<ConnectionEvent> = {}): ConnectionEvent => ({
    type: "http",
    dst_ip: "93.184.216.34",
    dst_port: 80,
    url,
    method: "GET",
    ...extra,
  });
  const rules = [
    rule("url", "http://example.com/*", { port: [80] }),
    rule("host", "plain.com", { port: [80] }),
  ];
  const off = new Enforcer(policy(...rules));
  assert.equal(off.decide(http("http://example.com/x")).allowed, true);

  const cache = new DnsCache();
  const on = new Enforcer(policy(...rules), { corroborate: true, dnsCache: cache });
  const skipped = on.decide(http("http://example.com/x"));
  assert.deepEqual([skipped.allowed, skipped.reason], [false, "host not corroborated"]);
  assert.equal(on.decide(http("http://other.com/x")).reason, "no matching rule");
  on.recordDnsResponse("example.com", ["93.184.216.34"], 60);
  assert.equal(on.decide(http("http://example.com/x")).allowed, true);
  assert.equal(
    on.decide(http("http://example.com/x", { dst_ip: "6.6.6.6" })).reason,
    "host not corroborated",
  );
  // Host-header-only http event and a host rule.
  assert.equal(
    on.decide({ type: "http", dst_ip: "5.5.5.5", dst_port: 80, host: "plain.com" }).reason,
    "host not corroborated",
  );

  const withIpRule = new Enforcer(policy(rules[0], rule("cidr", "93.184.0.0/16", { port: [80] })), {
    corroborate: true,
  });
  const byIp = withIpRule.decide(http("http://example.com/x"));
  assert.deepEqual([byIp.allowed, byIp.index], [true, 0]);
});

Deno.test("corroboration: a URL rule with an IPv4 host matches only if it equals dst_ip", () => {
  const enforcer = new Enforcer(policy(rule("url", "http://10.0.0.5/*", { port: [80] })), {
    corroborate: true,
  });
  const event = (dst: string): ConnectionEvent => ({
    type: "http",
    dst_ip: dst,
    dst_port: 80,
    url: "http://10.0.0.5/a",
  });
  assert.equal(enforcer.decide(event("10.0.0.5")).allowed, true);
  assert.equal(enforcer.decide(event("10.0.0.6")).allowed, false);
});

Deno.test("corroboration applies to passthrough/insecure at the TLS stage", () => {
  const cache = new DnsCache();
  const rules = [rule("host", "a.com", { passthrough: true }), rule("host", "b.com", { insecure: true })];
  const enforcer = new Enforcer(policy(...rules), { corroborate: true, dnsCache: cache });
  const uncorroborated = enforcer.decide(tls("a.com"), { mitm: true });
  assert.deepEqual([uncorroborated.allowed, uncorroborated.passthrough], [true, false]);
  assert.equal(enforcer.decide(tls("b.com"), { mitm: true }).insecure, false);
  cache.add("a.com", [IP], 60);
  cache.add("b.com", [IP], 60);
  assert.equal(enforcer.decide(tls("a.com"), { mitm: true }).passthrough, true);
  assert.equal(enforcer.decide(tls("b.com"), { mitm: true }).insecure, true);
});

Deno.test("tcp: each DNS-cache name, else IP only; SNI not consulted", () => {
  const cache = new DnsCache();
  const rules = [rule("host", "db.internal.com", { port: [5432] }), rule("ip", IP, { port: [22] })];
  const enforcer = new Enforcer(policy(...rules), { dnsCache: cache });
  const tcp = (port: number, host?: string): ConnectionEvent => ({
    type: "tcp",
    dst_ip: IP,
    dst_port: port,
    ...(host ? { host } : {}),
  });
  assert.equal(enforcer.decide(tcp(5432, "db.internal.com")).allowed, false);
  cache.add("old.com", [IP], 300);
  cache.add("db.internal.com", [IP], 300);
  cache.add("newest.com", [IP], 300);
  const byName = enforcer.decide(tcp(5432));
  assert.deepEqual([byName.allowed, byName.hostname, byName.index], [true, "db.internal.com", 0]);
  const byIp = enforcer.decide(tcp(22));
  assert.deepEqual([byIp.allowed, byIp.index, byIp.passthrough, byIp.insecure], [true, 1, false, false]);
  assert.equal(enforcer.decide(tcp(23)).reason, "no matching rule");
});

Deno.test("udp: only udp ip/cidr rules; hostname rules with /udp only serve the DNS name check", () => {
  const rules = [
    rule("host", "ntp.org", { port: [123], protocol: "udp" }),
    rule("cidr", "10.0.0.0/8", { port: "*", protocol: "udp" }),
  ];
  const enforcer = new Enforcer(policy(...rules));
  assert.equal(
    enforcer.decide({ type: "udp", dst_ip: "1.2.3.4", dst_port: 123, host: "ntp.org" }).allowed,
    false,
  );
  assert.equal(enforcer.decide({ type: "udp", dst_ip: "10.2.3.4", dst_port: 123 }).index, 1);
  assert.equal(
    new Enforcer(policy(rule("ip", "10.2.3.4", { port: "*" }))).decide({
      type: "udp",
      dst_ip: "10.2.3.4",
      dst_port: 9,
    }).allowed,
    false,
  );
});

Deno.test("dns: resolver checked before the name; the reported rule is the name rule", () => {
  const resolver = rule("ip", "127.0.0.53", { port: [53], protocol: "udp" });
  const query = (name: string, dst = "127.0.0.53"): ConnectionEvent => ({
    type: "dns",
    dst_ip: dst,
    dst_port: 53,
    name,
  });
  const enforcer = new Enforcer(policy(resolver, rule("host", "x.com", { port: [22] })));
  const ok = enforcer.decide(query("X.com."));
  assert.deepEqual([ok.allowed, ok.index, ok.hostname, ok.reason], [true, 1, "x.com", "rule matched"]);
  assert.equal(enforcer.decide(query("y.com")).reason, "name not allowed");
  assert.equal(enforcer.decide(query("y.com", "8.8.8.8")).reason, "resolver not allowed");
  assert.equal(enforcer.decide(query("x.com", "8.8.8.8")).reason, "resolver not allowed");
  const tcpResolver = new Enforcer(policy(rule("ip", "8.8.8.8", { port: [53] }), rule("dns_host", "x.com")));
  assert.equal(tcpResolver.decide(query("x.com", "8.8.8.8")).reason, "resolver not allowed");
  // DNS cache never satisfies the resolver.
  const cache = new DnsCache();
  cache.add("x.com", ["8.8.8.8"], 300);
  assert.equal(
    new Enforcer(policy(rule("dns_host", "x.com")), { dnsCache: cache }).decide(query("x.com", "8.8.8.8"))
      .allowed,
    false,
  );
  // Without a name: generic match against udp ip/cidr rules.
  assert.equal(enforcer.decide({ type: "dns", dst_ip: "127.0.0.53", dst_port: 53 }).index, 0);
  // ... and only those: a `host` on a nameless query never lets a hostname rule with /udp match.
  const udpHost = new Enforcer(policy(rule("host", "x.com", { port: [53], protocol: "udp" })));
  const nameless = udpHost.decide({ type: "dns", dst_ip: "9.9.9.9", dst_port: 53, host: "x.com" });
  assert.deepEqual([nameless.allowed, nameless.reason], [false, "no matching rule"]);
});

Deno.test("audit mode: allowed is always true, policy and reason say what enforce would", () => {
  const rules = [rule("host", "a.com", { passthrough: true }), rule("host", "b.com")];
  const audit = new Enforcer(policy(...rules), { audit: true });
  const enforce = new Enforcer(policy(...rules));
  for (
    const event of [tls("a.com"), tls("b.com"), tls("c.com"), request("https://a.com/x", { host: "b.com" })]
  ) {
    const a = audit.decide(event, { mitm: true }), e = enforce.decide(event, { mitm: true });
    assert.equal(a.allowed, true);
    assert.deepEqual({ ...a, allowed: e.allowed }, e);
  }
  const denied = audit.decide(tls("c.com"), { mitm: true });
  assert.deepEqual([denied.policy, denied.reason, denied.passthrough, denied.insecure], [
    "deny",
    "no matching rule",
    false,
    false,
  ]);
  assert.equal(audit.decide(tls("a.com"), { mitm: true }).passthrough, true);
});

Deno.test("any exception while deciding denies with internal error, never throws", () => {
  const enforcer = new Enforcer(policy(rule("host", "a.com")));
  const cases: unknown[] = [
    null,
    { type: "smtp", dst_ip: IP, dst_port: 25 },
    { type: "https", dst_port: 443 },
    { type: "https", dst_ip: IP, dst_port: "443" },
    request("not a url"),
  ];
  for (const event of cases) {
    const decision = enforcer.decide(event as ConnectionEvent);
    assert.equal(decision.allowed, false);
    assert.equal(decision.policy, "deny");
    assert.match(decision.reason, /^internal error: /);
  }
  // A rules source that starts failing after construction still yields a decision.
  let calls = 0;
  const flaky = {
    get rules(): Rule[] {
      if (calls++ > 0) throw new Error("boom");
      return [];
    },
  };
  const flakyDecision = new Enforcer(flaky as unknown as Policy).decide(tls("a.com"));
  assert.deepEqual([flakyDecision.allowed, flakyDecision.reason], [false, "internal error: boom"]);
  const audit = new Enforcer(policy(), { audit: true }).decide(null as unknown as ConnectionEvent);
  assert.deepEqual([audit.allowed, audit.policy], [true, "deny"]);
});

Deno.test("constructor validates its arguments", () => {
  assert.throws(() => new Enforcer(null as unknown as Policy), TypeError);
  assert.throws(() => new Enforcer(policy(), { dnsCache: {} as DnsCache }), TypeError);
});

Deno.test("requests on an insecure connection arrive as type http with an https URL", () => {
  const cache = new DnsCache();
  const enforcer = new Enforcer(policy(rule("url", "https://self.signed.com/api/*", { insecure: true })), {
    corroborate: true,
    dnsCache: cache,
  });
  const event: ConnectionEvent = {
    type: "http",
    dst_ip: "10.1.1.1",
    dst_port: 443,
    host: "self.signed.com",
    url: "https://self.signed.com/api/x",
    method: "GET",
  };
  assert.equal(enforcer.decide(event).reason, "host not corroborated");
  cache.add("self.signed.com", ["10.1.1.1"], 60);
  const decision = enforcer.decide(event);
  assert.deepEqual([decision.allowed, decision.index, decision.insecure], [true, 0, false]);
  assert.equal(
    enforcer.decide({ ...event, url: "https://self.signed.com/other" }).reason,
    "no matching rule",
  );
});

Deno.test("Decision keys follow the documented order", () => {
  const decision = new Enforcer(policy(rule("host", "a.com"))).decide(tls("a.com"));
  assert.deepEqual(Object.keys(decision), [
    "allowed",
    "policy",
    "rule",
    "index",
    "passthrough",
    "insecure",
    "hostname",
    "reason",
  ]);
});
