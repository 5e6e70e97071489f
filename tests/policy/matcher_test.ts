import assert from "node:assert/strict";
import { compiledRules, linearMatch, parseEventUrl } from "../../src/policy/matcher.ts";
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

function ev(extra: Partial<ConnectionEvent> & { type: ConnectionEvent["type"] }): ConnectionEvent {
  return { dst_ip: "140.82.112.3", dst_port: 443, ...extra };
}

function matchIndex(rules: Rule[], event: ConnectionEvent): number | undefined {
  const indexed = compiledRules(rules).match(event);
  // The index must agree with a plain linear scan on every example.
  assert.deepEqual(indexed, linearMatch(rules, event));
  return indexed?.index;
}

Deno.test("compiledRules caches per array identity", () => {
  const rules = [rule("host", "a.com")];
  assert.equal(compiledRules(rules), compiledRules(rules));
  assert.notEqual(compiledRules(rules), compiledRules([...rules]));
});

Deno.test("an empty policy allows nothing", () => {
  assert.equal(matchIndex([], ev({ type: "https", host: "github.com" })), undefined);
});

Deno.test("first match in rule order is reported; order never changes the verdict", () => {
  const rules = [
    rule("wildcard_host", "*.github.com"),
    rule("host", "api.github.com"),
    rule("cidr", "140.82.0.0/16"),
  ];
  assert.equal(matchIndex(rules, ev({ type: "https", host: "api.github.com" })), 0);
  assert.equal(matchIndex([...rules].reverse(), ev({ type: "https", host: "api.github.com" })), 0);
  assert.equal(matchIndex([rules[1], rules[2]], ev({ type: "https", host: "api.github.com" })), 0);
  assert.equal(matchIndex([rules[2], rules[1]], ev({ type: "https", host: "api.github.com" })), 0);
});

Deno.test("protocol: tcp rules for http/https/tcp, udp rules for udp/dns", () => {
  const tcp = [rule("ip", "8.8.8.8", { port: [53] })];
  const udp = [rule("ip", "8.8.8.8", { port: [53], protocol: "udp" })];
  const at = { dst_ip: "8.8.8.8", dst_port: 53 };
  for (const type of ["http", "https", "tcp"] as const) {
    assert.equal(matchIndex(tcp, { type, ...at }), 0, type);
    assert.equal(matchIndex(udp, { type, ...at }), undefined, type);
  }
  for (const type of ["udp", "dns"] as const) {
    assert.equal(matchIndex(udp, { type, ...at }), 0, type);
    assert.equal(matchIndex(tcp, { type, ...at }), undefined, type);
  }
});

Deno.test("port: list, '*', and always the real destination port", () => {
  assert.equal(
    matchIndex([rule("host", "a.com", { port: [80, 443] })], ev({ type: "https", host: "a.com" })),
    0,
  );
  assert.equal(
    matchIndex([rule("host", "a.com", { port: [80] })], ev({ type: "https", host: "a.com" })),
    undefined,
  );
  assert.equal(
    matchIndex([rule("host", "a.com", { port: "*" })], ev({ type: "tcp", host: "a.com", dst_port: 1 })),
    0,
  );
  const url = [rule("url", "https://a.com:8443/*", { port: [8443] })];
  assert.equal(matchIndex(url, ev({ type: "https", url: "https://a.com:8443/x", dst_port: 443 })), undefined);
  assert.equal(matchIndex(url, ev({ type: "https", url: "https://a.com/x", dst_port: 8443 })), 0);
});

Deno.test("ip and cidr rules match dst_ip even when the event has a hostname", () => {
  assert.equal(matchIndex([rule("ip", "140.82.112.3")], ev({ type: "https", host: "other.com" })), 0);
  assert.equal(matchIndex([rule("cidr", "140.82.0.0/16")], ev({ type: "https", host: "other.com" })), 0);
  assert.equal(matchIndex([rule("cidr", "140.83.0.0/16")], ev({ type: "https" })), undefined);
  assert.equal(matchIndex([rule("cidr", "10.1.2.3/8")], ev({ type: "https", dst_ip: "10.200.0.1" })), 0);
  assert.equal(matchIndex([rule("cidr", "0.0.0.0/0", { port: "*" })], ev({ type: "tcp", dst_port: 22 })), 0);
});

Deno.test("IPv4-mapped dst_ip is treated as IPv4; other IPv6 never matches ip/cidr", () => {
  assert.equal(
    matchIndex([rule("ip", "140.82.112.3")], ev({ type: "https", dst_ip: "::ffff:140.82.112.3" })),
    0,
  );
  assert.equal(
    matchIndex([rule("cidr", "0.0.0.0/0")], ev({ type: "https", dst_ip: "2606:50c0::1" })),
    undefined,
  );
});

Deno.test("event hostname: host, else name, else the URL host; normalised", () => {
  const rules = [rule("host", "github.com", { port: "*" })];
  assert.equal(matchIndex(rules, ev({ type: "https", host: "GitHub.com." })), 0);
  assert.equal(matchIndex(rules, ev({ type: "tcp", name: "github.com" })), 0);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://GITHUB.com./x" })), 0);
  assert.equal(matchIndex(rules, ev({ type: "https" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "" })), undefined);
});

Deno.test("url rule: scheme, host, path and method all matter", () => {
  const rules = [rule("url", "https://api.github.com/repos/*")];
  const ok = ev({ type: "https", url: "https://api.github.com/repos/a/b", method: "GET" });
  assert.equal(matchIndex(rules, ok), 0);
  assert.equal(matchIndex(rules, { ...ok, url: "http://api.github.com/repos/a" }), undefined);
  assert.equal(matchIndex(rules, { ...ok, url: "https://github.com/repos/a" }), undefined);
  assert.equal(matchIndex(rules, { ...ok, url: "https://api.github.com/users/a" }), undefined);
  assert.equal(matchIndex(rules, { ...ok, method: "POST" }), undefined);
  assert.equal(matchIndex(rules, { ...ok, method: "head" }), 0);
  assert.equal(matchIndex(rules, { ...ok, method: undefined }), 0); // absent ⇒ GET
  assert.equal(matchIndex(rules, { ...ok, url: undefined, host: "api.github.com" }), undefined);
  assert.equal(matchIndex(rules, { ...ok, url: "https://api.github.com/repos/../admin" }), undefined);
  assert.equal(matchIndex(rules, { ...ok, url: "https://user:pw@api.github.com/repos/a?x=1#f" }), 0);
});

Deno.test("methods: explicit list does not imply HEAD; * matches any; null always", () => {
  const post = [rule("url", "https://a.com/*", { methods: ["POST"] })];
  assert.equal(matchIndex(post, ev({ type: "https", url: "https://a.com/x", method: "POST" })), 0);
  assert.equal(matchIndex(post, ev({ type: "https", url: "https://a.com/x", method: "HEAD" })), undefined);
  const mixed = [rule("url", "https://a.com/*", { methods: ["POST", "*"] })];
  assert.equal(matchIndex(mixed, ev({ type: "https", url: "https://a.com/x", method: "DELETE" })), 0);
  const any = [rule("url", "https://a.com/*", { methods: null })];
  assert.equal(matchIndex(any, ev({ type: "https", url: "https://a.com/x", method: "PATCH" })), 0);
});

Deno.test("url rule hosts: wildcards only with *, IPv4 host must equal the URL host", () => {
  const wild = [rule("url", "https://*.github.com/*")];
  assert.equal(matchIndex(wild, ev({ type: "https", url: "https://api.github.com/x" })), 0);
  assert.equal(matchIndex(wild, ev({ type: "https", url: "https://github.com/x" })), undefined);
  const ip = [rule("url", "http://10.0.0.5/*", { port: [80] })];
  assert.equal(
    matchIndex(ip, ev({ type: "http", url: "http://10.0.0.5/a", dst_ip: "10.0.0.5", dst_port: 80 })),
    0,
  );
  assert.equal(
    matchIndex(ip, ev({ type: "http", url: "http://10.0.0.6/a", dst_ip: "10.0.0.5", dst_port: 80 })),
    undefined,
  );
});

Deno.test("url rule root path https://a.com/ matches only the root", () => {
  const rules = [rule("url", "https://a.com/")];
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://a.com" })), 0);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://a.com/?q=1" })), 0);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://a.com/x" })), undefined);
});

Deno.test("path rule: scheme and host of url_base, effective pattern of §8", () => {
  const rules = [rule("path", "/x", { url_base: "https://a.com/api/" })];
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://a.com/api/x" })), 0);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://a.com/x" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "http://a.com/api/x" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://b.com/api/x" })), undefined);
  const rootBase = [rule("path", "/v1/*", { url_base: "https://api.x.com:443|8443" })];
  assert.equal(matchIndex(rootBase, ev({ type: "https", url: "https://api.x.com/v1/a" })), 0);
  const noBase = [rule("path", "/x")];
  assert.equal(matchIndex(noBase, ev({ type: "https", url: "https://a.com/x" })), undefined);
});

Deno.test("dns_* rules never satisfy the generic match", () => {
  const rules = [
    rule("dns_host", "a.com", { port: "*" }),
    rule("dns_wildcard_host", "*.a.com", { port: "*" }),
  ];
  assert.equal(matchIndex(rules, ev({ type: "https", host: "a.com" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "b.a.com" })), undefined);
});

Deno.test("attributes restrict the generic match", () => {
  const rules = [rule("host", "a.com", { attrs: { exe: "*/git" } })];
  assert.equal(matchIndex(rules, ev({ type: "https", host: "a.com", exe: "/usr/bin/git" })), 0);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "a.com", exe: "/usr/bin/curl" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "a.com" })), undefined);
});

Deno.test("dns dual check: resolver needs a udp ip/cidr rule, name any hostname rule", () => {
  const resolver = rule("ip", "127.0.0.53", { port: [53], protocol: "udp" });
  const query = { type: "dns" as const, dst_ip: "127.0.0.53", dst_port: 53, name: "Example.com." };
  // Only the resolver: no name rule ⇒ no match.
  assert.equal(matchIndex([resolver], query), undefined);
  // Name via dns_host; the reported rule is the name rule.
  assert.equal(matchIndex([resolver, rule("dns_host", "example.com")], query), 1);
  // host rule on another port/protocol still permits the name (x.com:22).
  assert.equal(matchIndex([resolver, rule("host", "example.com", { port: [22] })], query), 1);
  assert.equal(
    matchIndex([resolver, rule("wildcard_host", "*.example.com")], { ...query, name: "a.example.com" }),
    1,
  );
  assert.equal(
    matchIndex([resolver, rule("dns_wildcard_host", "*.example.com")], { ...query, name: "a.example.com" }),
    1,
  );
  assert.equal(matchIndex([resolver, rule("url", "https://example.com/x")], query), 1);
  assert.equal(matchIndex([resolver, rule("path", "/x", { url_base: "https://example.com" })], query), 1);
  // A tcp rule for the resolver (8.8.8.8:53 without /udp) never satisfies part 1.
  assert.equal(
    matchIndex([rule("ip", "127.0.0.53", { port: [53] }), rule("dns_host", "example.com")], query),
    undefined,
  );
  // Hostname rules never satisfy the resolver; ip/cidr rules never permit a name.
  assert.equal(matchIndex([rule("cidr", "127.0.0.0/8", { port: [53], protocol: "udp" })], query), undefined);
  // Attributes are checked on both parts.
  const gated = [
    rule("ip", "127.0.0.53", { port: [53], protocol: "udp", attrs: { exe: "/usr/bin/dig" } }),
    rule("dns_host", "example.com"),
  ];
  assert.equal(matchIndex(gated, query), undefined);
  assert.equal(matchIndex(gated, { ...query, exe: "/usr/bin/dig" }), 1);
  const gatedName = [resolver, rule("dns_host", "example.com", { attrs: { exe: "/usr/bin/dig" } })];
  assert.equal(matchIndex(gatedName, query), undefined);
});

Deno.test("a dns event without a name uses the generic match", () => {
  const rules = [rule("ip", "8.8.8.8", { port: [53], protocol: "udp" })];
  assert.equal(matchIndex(rules, { type: "dns", dst_ip: "8.8.8.8", dst_port: 53 }), 0);
  assert.equal(matchIndex(rules, { type: "dns", dst_ip: "8.8.8.8", dst_port: 53, name: "" }), 0);
});

Deno.test("built-in runner rules (§12) match as described", () => {
  const runner = "/system.slice/hosted-compute-agent.service";
  const agent = "/azure.slice/walinuxagent.service";
  const rules = [
    rule("ip", "127.0.0.53", { port: [53], protocol: "udp", attrs: { cgroup: runner }, line: 0 }),
    rule("ip", "168.63.129.16", { port: [80, 32526], attrs: { cgroup: agent }, line: 0 }),
    rule("ip", "169.254.169.254", { port: [80], attrs: { cgroup: agent }, line: 0 }),
    rule("host", "results-receiver.actions.githubusercontent.com", { attrs: { cgroup: runner }, line: 0 }),
    rule("wildcard_host", "hosted-compute-watchdog-prod-*.githubapp.com", {
      attrs: { cgroup: runner, exe: "/tmp/provjobd*" },
      line: 0,
    }),
  ];
  assert.equal(
    matchIndex(rules, { type: "http", dst_ip: "168.63.129.16", dst_port: 32526, cgroup: agent }),
    1,
  );
  assert.equal(
    matchIndex(rules, { type: "http", dst_ip: "168.63.129.16", dst_port: 32526, cgroup: runner }),
    undefined,
  );
  assert.equal(
    matchIndex(rules, { type: "http", dst_ip: "169.254.169.254", dst_port: 80, cgroup: agent }),
    2,
  );
  assert.equal(
    matchIndex(
      rules,
      ev({ type: "https", host: "results-receiver.actions.githubusercontent.com", cgroup: runner }),
    ),
    3,
  );
  const watchdog = ev({
    type: "https",
    host: "hosted-compute-watchdog-prod-eus.githubapp.com",
    cgroup: runner,
  });
  assert.equal(matchIndex(rules, watchdog), undefined);
  assert.equal(matchIndex(rules, { ...watchdog, exe: "/tmp/provjobd1234" }), 4);
  // An unattributed connection (no cgroup) matches no rule.
  assert.equal(
    matchIndex(rules, ev({ type: "https", host: "results-receiver.actions.githubusercontent.com" })),
    undefined,
  );
});

Deno.test("malformed rules never match and never throw", () => {
  const rules = [rule("ip", "not-an-ip"), rule("cidr", "1.2.3.4/40"), rule("url", "ftp://a.com/x")];
  assert.equal(matchIndex(rules, ev({ type: "https", url: "ftp://a.com/x", dst_ip: "1.2.3.4" })), undefined);
});

Deno.test("parseEventUrl keeps the raw path and strips userinfo and port", () => {
  assert.deepEqual(parseEventUrl("https://u:p@A.com.:8443/a/../b?q#f"), {
    scheme: "https",
    host: "a.com",
    path: "/a/../b?q#f",
  });
  assert.deepEqual(parseEventUrl("HTTP://a.com"), { scheme: "http", host: "a.com", path: "/" });
  assert.deepEqual(parseEventUrl("http://a.com?x=1"), { scheme: "http", host: "a.com", path: "/?x=1" });
  assert.equal(parseEventUrl("a.com/x"), undefined);
  assert.equal(parseEventUrl("https:///x"), undefined);
});

Deno.test("a backslash ends the URL authority (as WHATWG URL parsing does): no userinfo trick", () => {
  assert.deepEqual(parseEventUrl("https://evil.com\\@github.com/x"), {
    scheme: "https",
    host: "evil.com",
    path: "/\\@github.com/x",
  });
  const rules = [rule("url", "https://github.com/*")];
  const url = "https://evil.com\\@github.com/x";
  assert.equal(matchIndex(rules, ev({ type: "https", url, method: "GET" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", url: "https://x@github.com/x", method: "GET" })), 0);
});

Deno.test("no IDNA conversion: a punycode rule does not match the Unicode name and vice versa", () => {
  const rules = [rule("host", "xn--bcher-kva.de")];
  assert.equal(matchIndex(rules, ev({ type: "https", host: "bücher.de" })), undefined);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "XN--BCHER-KVA.DE" })), 0);
});

Deno.test("a Host header with a port is compared without it", () => {
  const rules = [rule("host", "a.com", { port: [8080] })];
  assert.equal(matchIndex(rules, { type: "http", dst_ip: "1.2.3.4", dst_port: 8080, host: "a.com:8080" }), 0);
});

Deno.test("many url rules on one host: the path sub-index keeps first-match order", () => {
  const rules: Rule[] = [];
  for (let i = 0; i < 200; i++) rules.push(rule("url", `https://api.github.com/repos/org${i}/*`));
  rules.push(rule("url", "https://api.github.com/*", { methods: ["POST"] }));
  rules.push(rule("url", "https://*.github.com/repos/org7/*"));
  rules.push(rule("url", "https://api.github.com/repos/org7/x"));
  const request = (path: string, method = "GET") =>
    ev({ type: "https", url: `https://api.github.com${path}`, method });
  assert.equal(matchIndex(rules, request("/repos/org7/x")), 7);
  assert.equal(matchIndex(rules, request("/repos/org199")), 199);
  assert.equal(matchIndex(rules, request("/repos/org200/x")), undefined);
  assert.equal(matchIndex(rules, request("/repos/org200/x", "POST")), 200);
  assert.equal(matchIndex(rules.slice(200), request("/repos/org7/x")), 1);
  assert.equal(matchIndex(rules.slice(201), request("/repos/org7/x")), 0);
});

Deno.test("many label-form wildcards under one base: the glob-prefix sub-index keeps first-match order", () => {
  const rules: Rule[] = [];
  for (let i = 0; i < 100; i++) rules.push(rule("wildcard_host", `cdn${i}-*.edge.net`));
  rules.push(rule("wildcard_host", "*.edge.net"));
  rules.push(rule("wildcard_host", "*-eu.edge.net"));
  assert.equal(matchIndex(rules, ev({ type: "https", host: "cdn42-eu.edge.net" })), 42);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "cdn4-eu.edge.net" })), 4);
  assert.equal(matchIndex(rules, ev({ type: "https", host: "cdn100-eu.edge.net" })), 100);
  assert.equal(matchIndex(rules.slice(101), ev({ type: "https", host: "cdn100-eu.edge.net" })), 0);
  assert.equal(matchIndex(rules.slice(101), ev({ type: "https", host: "x.cdn100-eu.edge.net" })), undefined);
});
