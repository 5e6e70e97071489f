// Every production of the policy grammar (policy.md §2–§4), valid and invalid forms.
import assert from "node:assert/strict";
import { parseLine } from "../../src/policy/grammar.ts";
import { validatePolicy } from "../../src/policy/policy.ts";
import type { Rule } from "../../src/policy/types.ts";

/** The single rule of a one-rule policy text (after optional header lines). */
function rule(text: string): Rule {
  const r = validatePolicy(text);
  assert.deepEqual(r.errors, [], text);
  assert.equal(r.rules.length, 1, text);
  return r.rules[0];
}

/** [line, column, message] of every error. */
function errors(text: string): [number, number, string][] {
  return validatePolicy(text).errors.map((e) => [e.line, e.column, e.message]);
}

function error(text: string): [number, number, string] {
  const all = errors(text);
  assert.equal(all.length, 1, `${text}: ${JSON.stringify(all)}`);
  return all[0];
}

const valid = (text: string) => assert.deepEqual(errors(text), [], text);

Deno.test("line: blank, comment, header, rule", () => {
  const lineOf = (text: string) => {
    const parsed = parseLine(text);
    assert.ok(parsed.ok, text);
    return parsed.line;
  };
  assert.deepEqual(lineOf(""), { kind: "blank" });
  assert.deepEqual(lineOf(" \t "), { kind: "blank" });
  assert.deepEqual(lineOf('  # x [ ] " `'), { kind: "comment" });
  assert.deepEqual(lineOf("#"), { kind: "comment" });
  const header = parseLine("[]");
  assert.ok(header.ok && header.line.kind === "header" && header.line.category === null);
  const r = parseLine("github.com");
  assert.ok(r.ok && r.line.kind === "rule" && r.line.rule.kind === "net");
});

Deno.test("trail: inline comment needs WS before #", () => {
  assert.equal(rule("github.com # ci").target, "github.com");
  assert.equal(rule("github.com\t#ci  ").target, "github.com");
  assert.deepEqual(error("github.com#ci"), [1, 11, '"#" starts a comment only after a space or TAB']);
  assert.deepEqual(error("[:443]# x"), [1, 7, '"#" starts a comment only after a space or TAB']);
  assert.deepEqual(error("x.com exe=/a#b"), [1, 13, '"#" starts a comment only after a space or TAB']);
  valid("[:443] # x\nx.com");
});

Deno.test("header: no WS just inside the brackets", () => {
  assert.deepEqual(error("[ :443 ]"), [1, 2, "no space allowed just inside the brackets of a header"]);
  assert.deepEqual(error("[:443 ]"), [1, 6, "no space allowed just inside the brackets of a header"]);
  assert.deepEqual(error("  [:443"), [1, 8, 'header needs a closing "]"']);
  assert.deepEqual(error("[:443] x"), [1, 8, 'unexpected "x"']);
  valid("  [:443]  ");
  assert.deepEqual(error("[]]"), [1, 3, 'unexpected "]"']);
  assert.deepEqual(error("[[]"), [1, 2, 'unexpected "["']);
});

Deno.test("hbody: every alternative", () => {
  assert.equal(rule("[passthrough]\nx.com").passthrough, true);
  assert.deepEqual(rule("[passthrough exe=/a]\nx.com").attrs, { exe: "/a" });
  assert.equal(rule("[insecure]\nx.com").insecure, true);
  assert.deepEqual(rule("[insecure step=s]\nx.com").attrs, { step: "s" });
  assert.equal(rule("[https://api.x.com/v1]\n/a").url_base, "https://api.x.com/v1");
  assert.equal(rule("[https://x.com:80|8080]\n/a").url_base, "https://x.com:80|8080");
  assert.equal(rule("[http://1.2.3.4 exe=/a]\n/a").url_base, "http://1.2.3.4");
  assert.equal(rule("[https://*.x.com/]\n/a").url_base, "https://*.x.com/");
  assert.deepEqual(rule("[GET|POST]\nhttps://x.com/").methods, ["GET", "POST"]);
  assert.deepEqual(rule("[*|PUT action=a/b]\nhttps://x.com/").attrs, { action: "a/b" });
  assert.deepEqual(rule("[:22]\nx.com").port, [22]);
  const udp = rule("[:53/udp exe=/usr/bin/dig]\n8.8.8.8");
  assert.deepEqual([udp.port, udp.protocol, udp.attrs], [[53], "udp", { exe: "/usr/bin/dig" }]);
  assert.deepEqual(rule("[:*/tcp]\nx.com").port, "*");
  assert.deepEqual(rule("[exe=/a arg=b]\nx.com").attrs, { exe: "/a", arg: "b" });
  assert.equal(rule("[]\nx.com").target, "x.com");
});

Deno.test("hbody: one category plus attributes", () => {
  assert.deepEqual(error("[GET https://a.com]"), [1, 6, "a header holds one category plus attributes"]);
  assert.deepEqual(error("[passthrough insecure]"), [1, 14, "a header holds one category plus attributes"]);
  assert.deepEqual(error("[/udp]"), [1, 2, 'a protocol needs a port before it (e.g. ":*/udp")']);
  assert.deepEqual(error("[github.com]"), [
    1,
    2,
    "a header cannot hold a rule (headers set ports, methods, a URL base, flags or attributes)",
  ]);
  assert.deepEqual(error("[:22 GET]"), [1, 6, "a header holds one category plus attributes"]);
  assert.deepEqual(error("[https://a.com?x]"), [1, 15, 'a URL rule cannot have a query ("?")']);
});

Deno.test("url-rule: methods, scheme, host forms, ports, path, insecure, attributes", () => {
  const r = rule('GET|POST https://api.github.com/repos/* insecure exe=*/git arg="a b"');
  assert.deepEqual(r, {
    type: "url",
    target: "https://api.github.com/repos/*",
    port: [443],
    protocol: "tcp",
    methods: ["GET", "POST"],
    url_base: null,
    attrs: { exe: "*/git", arg: { value: "a b", literal: true } },
    insecure: true,
    line: 1,
  });
  assert.deepEqual(rule("http://x.com/").port, [80]);
  assert.deepEqual(rule("https://x.com:8443|9443/a").port, [8443, 9443]);
  assert.equal(rule("https://x.com:8443|9443/a").target, "https://x.com:8443|9443/a");
  assert.deepEqual(rule("http://x.com:*/").port, "*");
  assert.equal(rule("https://1.2.3.4/x").target, "https://1.2.3.4/x");
  for (const host of ["*.x.com", "derp*.x.com", "*.derp*.x.com", "*-prod.x.com", "*.*.x.com", "*.com"]) {
    assert.equal(rule(`https://${host}/`).target, `https://${host}/`);
  }
  assert.equal(rule("https://github.com/").target, "https://github.com/");
  assert.deepEqual(rule("https://x.com/").methods, ["GET", "HEAD"]);
  assert.deepEqual(rule("POST https://x.com/").methods, ["POST"]);
  for (const m of ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*"]) {
    assert.deepEqual(rule(`${m} https://x.com/`).methods, [m]);
  }
  assert.deepEqual(rule("POST|* https://x.com/").methods, ["POST", "*"]);
});

Deno.test("url-rule: errors", () => {
  assert.deepEqual(error("https://github.com"), [1, 19, 'URL rule needs a path (add "/")']);
  assert.deepEqual(error("https://github.com:443"), [1, 23, 'URL rule needs a path (add "/")']);
  assert.deepEqual(error("https://user@github.com/"), [1, 9, "userinfo is not allowed in a URL rule"]);
  assert.deepEqual(error("https://github.com/a?b=c"), [1, 21, 'a URL rule cannot have a query ("?")']);
  assert.deepEqual(error("https://github.com/a#top"), [1, 21, 'a URL rule cannot have a fragment ("#")']);
  assert.deepEqual(error("https:/github.com/"), [1, 7, 'expected "//" after "https:"']);
  assert.deepEqual(error("ftp://github.com/"), [1, 1, 'unsupported scheme "ftp" (use http or https)']);
  assert.deepEqual(error("https://[::1]/"), [1, 9, "IPv6 literals are not supported"]);
  assert.deepEqual(error("https://github.*/"), [1, 16, "wildcard allowed only in the first label"]);
  assert.deepEqual(error("https://x.com:0/"), [1, 15, "port 0 is outside 1..65535"]);
  assert.deepEqual(error("get https://x.com/"), [1, 1, 'unknown method "get" (methods are upper-case)']);
  assert.deepEqual(error("GET|FETCH https://x.com/"), [1, 5, 'unknown method "FETCH"']);
  assert.deepEqual(error("GET x.com"), [1, 1, "methods apply only to URL and path rules"]);
  assert.deepEqual(error("https://x.com/ passthrough"), [
    1,
    16,
    "passthrough is allowed only on host and wildcard rules, not on url rules",
  ]);
  assert.deepEqual(error("https://x.com/a b"), [1, 17, 'unexpected "b"']);
  assert.deepEqual(error("https://x.com/ exe=/a insecure"), [
    1,
    23,
    '"insecure" must come before the attributes',
  ]);
});

Deno.test("PCHAR: RFC 3986 path characters only", () => {
  const all = "/A-Za-z0-9._~!$&'()*+,;=:@%/-";
  assert.equal(rule(`https://x.com${all}`).target, `https://x.com${all}`);
  assert.deepEqual(error("https://x.com/a^b"), [1, 16, 'unexpected "^"']);
  assert.deepEqual(error("https://x.com/a\\b"), [1, 16, 'unexpected "\\\\"']);
});

Deno.test("path-rule: methods, path, insecure, attributes", () => {
  const r = rule("[https://a.com/api/]\nPUT /x/* insecure exe=/a");
  assert.deepEqual(r, {
    type: "path",
    target: "/x/*",
    port: [443],
    protocol: "tcp",
    methods: ["PUT"],
    url_base: "https://a.com/api/",
    attrs: { exe: "/a" },
    insecure: true,
    line: 2,
  });
  assert.equal(rule("[http://a.com]\n/").target, "/");
  assert.deepEqual(error("[https://a.com]\n/a?b"), [2, 3, 'a path rule cannot have a query ("?")']);
  assert.deepEqual(error("[https://a.com]\n/a#b"), [2, 3, 'a path rule cannot have a fragment ("#")']);
  assert.deepEqual(error("[https://a.com]\n/a b"), [2, 4, 'unexpected "b"']);
  assert.deepEqual(error("[https://a.com]\n/ passthrough"), [
    2,
    3,
    "passthrough is allowed only on host and wildcard rules, not on path rules",
  ]);
});

Deno.test("net-rule: token order target, ports/proto, passthrough, insecure, attributes", () => {
  const r = rule("*.github.com:443|80/tcp passthrough exe=*/git");
  assert.deepEqual(r, {
    type: "wildcard_host",
    target: "*.github.com",
    port: [443, 80],
    protocol: "tcp",
    methods: null,
    url_base: null,
    attrs: { exe: "*/git" },
    passthrough: true,
    line: 1,
  });
  assert.equal(rule("x.com insecure cgroup=@docker").insecure, true);
  assert.deepEqual(error("github.com exe=/a passthrough"), [
    1,
    19,
    '"passthrough" must come before the attributes',
  ]);
  assert.deepEqual(error("github.com insecure passthrough"), [
    1,
    21,
    '"passthrough" must come before "insecure"',
  ]);
  assert.deepEqual(error("github.com passthrough insecure"), [
    1,
    24,
    "a rule cannot be both passthrough and insecure",
  ]);
  assert.deepEqual(error("x.com passthrough passthrough"), [1, 19, '"passthrough" is given twice']);
  assert.deepEqual(error("x.com insecure insecure"), [1, 16, '"insecure" is given twice']);
  assert.deepEqual(error("github.com:443 tcp"), [1, 16, 'unexpected "tcp"']);
});

Deno.test("target: cidr | ip | dns: | wild-host | hostname", () => {
  assert.deepEqual([rule("10.0.0.0/8").type, rule("10.0.0.0/8").target], ["cidr", "10.0.0.0/8"]);
  assert.equal(rule("10.1.2.3/8").target, "10.1.2.3/8");
  assert.equal(rule("0.0.0.0/0:*").port, "*");
  assert.deepEqual([rule("8.8.8.8").type, rule("8.8.8.8").target], ["ip", "8.8.8.8"]);
  assert.deepEqual([rule("dns:example.com").type, rule("dns:example.com").target], [
    "dns_host",
    "example.com",
  ]);
  assert.deepEqual([rule("dns:*.example.com").type, rule("dns:*.example.com").target], [
    "dns_wildcard_host",
    "*.example.com",
  ]);
  assert.deepEqual([rule("*.github.com").type, rule("github.com").type], ["wildcard_host", "host"]);
  assert.equal(rule("1.2.3.example.com").type, "host");
  assert.equal(rule("1.2.3.4a.com").type, "host");
});

Deno.test("ipv4, cidr: octets 0..255 and masks 0..32 without leading zeros; not followed by . or /", () => {
  valid("0.0.0.0\n255.255.255.255\n1.2.3.4/0\n1.2.3.4/32");
  assert.deepEqual(error("1.2.3.256"), [1, 7, "octet 256 is outside 0..255"]);
  assert.deepEqual(error("01.2.3.4"), [1, 1, 'octet "01" must not have a leading zero']);
  assert.deepEqual(error("1.2.3.4/33"), [1, 9, "mask 33 is outside 0..32"]);
  assert.deepEqual(error("1.2.3.4/08"), [1, 9, 'mask "08" must not have a leading zero']);
  assert.deepEqual(error("1.2.3.4.nip.io"), [
    1,
    1,
    "the first four labels of a hostname cannot all be numeric (an IP address?)",
  ]);
  assert.deepEqual(error("1.2.3"), [1, 1, 'IPv4 address "1.2.3" needs four octets']);
  assert.deepEqual(error("1.2.3.4/"), [1, 9, "unexpected end of line"]);
  assert.deepEqual(error("::1"), [1, 1, "IPv6 literals are not supported"]);
  assert.deepEqual(error("2001:db8::1"), [1, 1, "IPv6 literals are not supported"]);
});

Deno.test("hostname, label, tld: invalid forms", () => {
  assert.deepEqual(error("localhost"), [1, 1, 'hostname "localhost" needs at least two labels']);
  assert.deepEqual(error("_"), [1, 1, 'invalid character "_" in hostname']);
  assert.deepEqual(error("x.com\u00a0exe=/a"), [1, 6, "invalid character U+00A0 in hostname"]);
  assert.deepEqual(error("é.com"), [1, 1, 'invalid character "é" in hostname']);
  assert.deepEqual(error("a_b.com"), [1, 2, 'invalid character "_" in hostname']);
  assert.deepEqual(error("example.com."), [1, 12, "hostname must not end with a dot"]);
  assert.deepEqual(error(".example.com"), [1, 1, "hostname must not start with a dot"]);
  assert.deepEqual(error("a..com"), [1, 3, "empty label in hostname"]);
  assert.deepEqual(error("-a.com"), [1, 1, 'label "-a" must not start or end with "-"']);
  assert.deepEqual(error("a-.com"), [1, 2, 'label "a-" must not start or end with "-"']);
  assert.deepEqual(error("x.a-.com"), [1, 4, 'label "a-" must not start or end with "-"']);
  assert.deepEqual(error("a.123"), [
    1,
    3,
    'top-level label "123" must start with a letter and hold only letters and digits',
  ]);
  assert.deepEqual(error("a.b-c"), [
    1,
    3,
    'top-level label "b-c" must start with a letter and hold only letters and digits',
  ]);
  valid("a-b--c.x9.com\nxn--bcher-kva.example\na.b.c.d.e.f.g");
  assert.deepEqual(error("dns:1.2.3.4"), [1, 5, "a dns: rule needs a hostname, not an IP address"]);
});

Deno.test("wild-host and wlabel: first label, or second after a bare *", () => {
  for (
    const w of [
      "*.github.com",
      "derp*.x.com",
      "*.derp*.x.com",
      "*-prod.x.com",
      "**.x.com",
      "*.*.x.com",
      "*.com",
      "a*b*.x.com",
    ]
  ) {
    assert.equal(rule(w).type, "wildcard_host", w);
  }
  assert.deepEqual(error("*"), [1, 1, 'a bare "*" is not allowed (to allow everything use 0.0.0.0/0:*)']);
  assert.deepEqual(error("foo.*.com"), [1, 5, "wildcard allowed only in the first label"]);
  assert.deepEqual(error("github.*"), [1, 8, "wildcard allowed only in the first label"]);
  assert.deepEqual(error("github.com*"), [1, 11, "wildcard allowed only in the first label"]);
  assert.equal(rule("*.x*.y.com").target, "*.x*.y.com");
  assert.deepEqual(error("a.*.*.com"), [1, 3, "wildcard allowed only in the first label"]);
  assert.deepEqual(error("*.*.*.com"), [1, 5, "wildcard allowed only in the first label"]);
});

Deno.test("ports: list, *, range, no leading zero, * never mixed", () => {
  assert.deepEqual(rule("x.com:443").port, [443]);
  assert.deepEqual(rule("x.com:80|443|80").port, [80, 443, 80]);
  assert.deepEqual(rule("x.com:*").port, "*");
  assert.deepEqual(rule("x.com:1|65535").port, [1, 65535]);
  assert.deepEqual(error("x.com:70000"), [1, 7, "port 70000 is outside 1..65535"]);
  assert.deepEqual(error("x.com:65536"), [1, 7, "port 65536 is outside 1..65535"]);
  assert.deepEqual(error("x.com:0"), [1, 7, "port 0 is outside 1..65535"]);
  assert.deepEqual(error("x.com:080"), [1, 7, 'port "080" must not have a leading zero']);
  assert.deepEqual(error("x.com:443|*"), [1, 11, '"*" cannot be combined with other ports']);
  assert.deepEqual(error("x.com:*|443"), [1, 7, '"*" cannot be combined with other ports']);
  assert.deepEqual(error("x.com:"), [1, 7, "unexpected end of line"]);
  assert.deepEqual(error("x.com:80|"), [1, 10, "unexpected end of line"]);
  assert.deepEqual(error("x.com:http"), [1, 7, 'unexpected "http"']);
});

Deno.test("proto: only directly after a port spec", () => {
  assert.equal(rule("x.com:*/udp").protocol, "udp");
  assert.equal(rule("x.com:53/tcp").protocol, "tcp");
  assert.equal(rule("x.com").protocol, "tcp");
  assert.deepEqual(error("github.com/udp"), [
    1,
    11,
    'a protocol needs a port before it (e.g. "github.com:*/udp")',
  ]);
  assert.deepEqual(error("github.com/path"), [
    1,
    11,
    'a rule with a path needs a scheme (e.g. "https://github.com/path")',
  ]);
  assert.deepEqual(error("x.com:53/sctp"), [1, 10, 'unknown protocol "sctp" (use tcp or udp)']);
});

Deno.test("kv: every key", () => {
  const r = rule("x.com arg[0]=a arg=b exe=c cgroup=d step=e action=f image=g arg[12]=h");
  assert.deepEqual(r.attrs, {
    "arg[0]": "a",
    arg: "b",
    exe: "c",
    cgroup: "d",
    step: "e",
    action: "f",
    image: "g",
    "arg[12]": "h",
  });
  assert.deepEqual(rule("x.com arg[007]=a").attrs, { "arg[7]": "a" });
  assert.deepEqual(error("x.com user=a"), [1, 7, 'unknown attribute "user"']);
  assert.deepEqual(error("x.com arg[x]=a"), [1, 7, 'unknown attribute "arg[x]"']);
  assert.deepEqual(error("x.com exe[1]=a"), [1, 7, 'unknown attribute "exe[1]"']);
  assert.deepEqual(error("x.com exe="), [1, 11, 'attribute "exe" needs a value']);
});

Deno.test("value: backtick glob, double-quoted literal, unquoted glob", () => {
  assert.deepEqual(rule("x.com exe=`a b# ]*`").attrs, { exe: { value: "a b# ]*", literal: false } });
  assert.deepEqual(rule('x.com arg="a b"').attrs, { arg: { value: "a b", literal: true } });
  assert.deepEqual(rule('x.com arg=""').attrs, { arg: { value: "", literal: true } });
  assert.deepEqual(rule("x.com arg=``").attrs, { arg: { value: "", literal: false } });
  assert.deepEqual(rule("x.com exe=*/node").attrs, { exe: "*/node" });
  assert.deepEqual(rule('x.com exe=a"b`c').attrs, { exe: 'a"b`c' });
  assert.deepEqual(rule("x.com cgroup=@docker").attrs, { cgroup: "@docker" });
  assert.deepEqual(rule('x.com cgroup="@docker"').attrs, { cgroup: { value: "@docker", literal: true } });
  assert.deepEqual(rule("[exe=`a]b`]\nx.com").attrs, { exe: { value: "a]b", literal: false } });
  assert.deepEqual(error('x.com exe="abc'), [1, 11, "unterminated quote"]);
  assert.deepEqual(error("x.com exe=`a b"), [1, 11, "unterminated quote"]);
  assert.deepEqual(error("[exe=`a]"), [1, 6, "unterminated quote"]);
  assert.deepEqual(error("x.com exe=a]"), [1, 12, 'unexpected "]"']);
});

Deno.test("ordered choice: the first alternative that lets the whole line parse wins", () => {
  // `passthrough` is also a syntactically possible method list, but the flag header wins.
  assert.equal(rule("[passthrough]\nx.com").passthrough, true);
  // `1.2.3.4` is an ip, `1.2.3.4/8` a cidr, `1.2.3.example.com` a hostname.
  assert.deepEqual(["1.2.3.4", "1.2.3.4/8", "1.2.3.example.com"].map((t) => rule(t).type), [
    "ip",
    "cidr",
    "host",
  ]);
  // A methods word before a URL is the prefix, not a target.
  assert.equal(rule("DELETE http://x.com/").type, "url");
});
