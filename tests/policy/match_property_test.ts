import assert from "node:assert/strict";
import fc from "fast-check";
import { hostPatternMatches } from "../../src/policy/hostname.ts";
import { ipInCidr } from "../../src/policy/ipv4.ts";
import { urlPathMatches } from "../../src/policy/url_path.ts";
import { compiledRules, linearMatch } from "../../src/policy/matcher.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import { Policy } from "../../src/policy/policy.ts";
import { DnsCache } from "../../src/policy/dns_cache.ts";
import type { AttrValue, ConnectionEvent, Rule } from "../../src/policy/types.ts";

const RUNS = { numRuns: 300 };

// Small vocabularies so that random rules and events actually collide.
const label = fc.constantFrom("a", "api", "github", "derp1", "derp", "com", "prod-1");
const tld = fc.constantFrom("com", "com", "io");
const hostname = fc.tuple(fc.array(label, { minLength: 1, maxLength: 3 }), tld).map(([ls, t]) =>
  [...ls, t].join(".")
);
const hostPattern = fc.oneof(
  hostname,
  hostname.map((h) => `*.${h}`),
  hostname.map((h) => `*.*.${h}`),
  fc.tuple(fc.constantFrom("derp*", "*-1", "a*", "**"), hostname).map(([w, h]) => `${w}.${h}`),
  fc.tuple(fc.constantFrom("derp*", "a*"), hostname).map(([w, h]) => `*.${w}.${h}`),
);

function randomCase(text: string, flips: boolean[]): string {
  return [...text].map((char, i) => (flips[i % flips.length] ? char.toUpperCase() : char)).join("");
}

Deno.test("property: hostname matching is case-insensitive and ignores one trailing dot", () => {
  fc.assert(
    fc.property(
      hostPattern,
      hostname,
      fc.array(fc.boolean(), { minLength: 1 }),
      fc.boolean(),
      (p, h, flips, dot) => {
        const expected = hostPatternMatches(p, h);
        assert.equal(
          hostPatternMatches(randomCase(p, flips), randomCase(h, flips.slice().reverse()) + (dot ? "." : "")),
          expected,
        );
      },
    ),
    RUNS,
  );
});

Deno.test("property: a *. pattern matches exactly the names that strictly extend its base", () => {
  fc.assert(
    fc.property(hostname, fc.array(label, { minLength: 0, maxLength: 3 }), (base, prefix) => {
      const name = [...prefix, base].join(".");
      assert.equal(hostPatternMatches(`*.${base}`, name), prefix.length > 0);
    }),
    RUNS,
  );
});

const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet);
const bits = (ip: number[]) => ip.map((o) => o.toString(2).padStart(8, "0")).join("");

Deno.test("property: CIDR membership equals a bit-string prefix comparison", () => {
  fc.assert(
    fc.property(ipv4, ipv4, fc.integer({ min: 0, max: 32 }), fc.boolean(), (net, ip, len, near) => {
      // Half the time derive the address from the network so that members are common.
      const address = near ? net.map((o, i) => (i === 3 ? ip[3] : o)) : ip;
      const expected = bits(address).slice(0, len) === bits(net).slice(0, len);
      assert.equal(ipInCidr(address.join("."), `${net.join(".")}/${len}`), expected);
      // And the BigInt view of the same thing.
      const toBig = (q: number[]) => q.reduce((acc, o) => acc * 256n + BigInt(o), 0n);
      const shift = BigInt(32 - len);
      assert.equal((toBig(address) >> shift) === (toBig(net) >> shift), expected);
    }),
    { numRuns: 1000 },
  );
});

const segment = fc.stringMatching(/^[a-z0-9_~%-]{0,5}$/).filter((s) => !/^(\.|%2e)*$/i.test(s) || s === "");
const path = fc.array(segment, { minLength: 1, maxLength: 5 }).map((segs) => "/" + segs.join("/"));

Deno.test("property: /p/* matches every extension of /p", () => {
  fc.assert(
    fc.property(
      fc.array(segment.filter((s) => s !== ""), { minLength: 1, maxLength: 3 }),
      fc.array(segment, { maxLength: 3 }),
      fc.boolean(),
      (base, extra, slash) => {
        const prefix = "/" + base.join("/");
        const extension = prefix + (extra.length ? "/" + extra.join("/") : "") + (slash ? "/" : "");
        assert.equal(urlPathMatches(`${prefix}/*`, extension), true, extension);
        assert.equal(urlPathMatches(`${prefix}/*`, extension + "?q=/x"), true);
      },
    ),
    RUNS,
  );
});

Deno.test("property: a pattern without * matches only itself modulo one trailing slash", () => {
  const strip = (p: string) => (p !== "/" && p.endsWith("/") ? p.slice(0, -1) : p);
  fc.assert(
    fc.property(path, path, (pattern, request) => {
      assert.equal(
        urlPathMatches(pattern, request),
        strip(pattern) === strip(request),
        `${pattern} ${request}`,
      );
      assert.equal(urlPathMatches(pattern, pattern), true);
    }),
    { numRuns: 500 },
  );
});

// Random rules and events for the decision-level properties.
const ipPool = fc.constantFrom(
  "10.0.0.1",
  "10.0.1.2",
  "140.82.112.3",
  "8.8.8.8",
  "127.0.0.53",
  "192.168.1.1",
);
const port = fc.constantFrom(22, 53, 80, 443, 8443);
const attrChoices: Record<string, AttrValue>[] = [
  { exe: "*/git" },
  { cgroup: "@docker" },
  { "arg[1]": "fetch" },
  { exe: { value: "/usr/bin/curl", literal: true } },
];
const attrs: fc.Arbitrary<Record<string, AttrValue>> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({}) },
  { weight: 1, arbitrary: fc.constantFrom(...attrChoices) },
);
const ports = fc.oneof(fc.constant("*" as const), fc.array(port, { minLength: 1, maxLength: 2 }));
const protocol = fc.constantFrom("tcp" as const, "udp" as const);
const urlPath = fc.constantFrom("/", "/*", "/repos/*", "/a/b", "/v*.zip", "/a/*/c");
const methods = fc.constantFrom("GET|HEAD", "POST", "*", "GET|POST").map((list) => list.split("|"));
const flags = fc.constantFrom({}, {}, { passthrough: true as const }, { insecure: true as const });

const ruleArb: fc.Arbitrary<Rule> = fc.oneof(
  fc.record({ h: hostPattern, port: ports, protocol, attrs, flags }).map((
    { h, port, protocol, attrs, flags },
  ) => ({
    type: h.includes("*") ? "wildcard_host" as const : "host" as const,
    target: h,
    port,
    protocol,
    methods: null,
    url_base: null,
    attrs,
    ...(flags.insecure
      ? { insecure: true as const }
      : flags.passthrough
      ? { passthrough: true as const }
      : {}),
    line: 1,
  })),
  fc.record({ ip: ipPool, len: fc.constantFrom(-1, 0, 8, 16, 24, 32), port: ports, protocol, attrs }).map((
    r,
  ) => ({
    type: r.len < 0 ? "ip" as const : "cidr" as const,
    target: r.len < 0 ? r.ip : `${r.ip}/${r.len}`,
    port: r.port,
    protocol: r.protocol,
    methods: null,
    url_base: null,
    attrs: r.attrs,
    line: 1,
  })),
  fc.record({
    scheme: fc.constantFrom("http", "https"),
    h: fc.oneof(hostPattern, ipPool),
    p: urlPath,
    methods,
    port: ports,
    attrs,
    insecure: fc.boolean(),
  })
    .map((r) => ({
      type: "url" as const,
      target: `${r.scheme}://${r.h}${r.p}`,
      port: r.port,
      protocol: "tcp" as const,
      methods: r.methods,
      url_base: null,
      attrs: r.attrs,
      ...(r.insecure ? { insecure: true as const } : {}),
      line: 1,
    })),
  fc.record({
    h: hostPattern,
    base: fc.constantFrom("", "/api", "/api/"),
    p: urlPath,
    methods,
    port: ports,
    attrs,
  }).map((r) => ({
    type: "path" as const,
    target: r.p,
    port: r.port,
    protocol: "tcp" as const,
    methods: r.methods,
    url_base: `https://${r.h}${r.base}`,
    attrs: r.attrs,
    line: 1,
  })),
  fc.record({ h: hostPattern, attrs }).map((r) => ({
    type: r.h.includes("*") ? "dns_wildcard_host" as const : "dns_host" as const,
    target: r.h,
    port: [53],
    protocol: "udp" as const,
    methods: null,
    url_base: null,
    attrs: r.attrs,
    line: 1,
  })),
);

const requestPath = fc.constantFrom(
  "/",
  "/repos/a",
  "/a/b",
  "/a/x/c",
  "/v1.zip",
  "/api/repos/x",
  "/api/a/b",
  "/a/../b",
);
const eventArb: fc.Arbitrary<ConnectionEvent> = fc.record({
  type: fc.constantFrom("http" as const, "https" as const, "tcp" as const, "udp" as const, "dns" as const),
  dst_ip: fc.oneof(ipPool, fc.constant("::ffff:10.0.0.1"), fc.constant("2001:db8::1")),
  dst_port: port,
  host: fc.option(hostname, { nil: undefined }),
  name: fc.option(hostname, { nil: undefined }),
  url: fc.option(
    fc.tuple(fc.constantFrom("http", "https"), fc.oneof(hostname, ipPool), requestPath).map(([s, h, p]) =>
      `${s}://${h}${p}`
    ),
    { nil: undefined },
  ),
  method: fc.option(fc.constantFrom("GET", "POST", "head"), { nil: undefined }),
  exe: fc.option(fc.constantFrom("/usr/bin/git", "/usr/bin/curl"), { nil: undefined }),
  cmdline: fc.option(fc.constantFrom(["git", "fetch"], ["curl", "-s"]).map((argv) => [...argv]), {
    nil: undefined,
  }),
  cgroup: fc.option(fc.constantFrom("/system.slice/docker-1.scope", "/user.slice"), { nil: undefined }),
}).map((event) =>
  Object.fromEntries(Object.entries(event).filter(([, v]) => v !== undefined)) as unknown as ConnectionEvent
);

/** Turns a host pattern into a concrete name it (usually) matches. */
function instantiate(pattern: string, fill: string): string {
  return pattern.replaceAll("*", fill);
}

/** Events aimed at one of the rules (hits and near misses), mixed with unrelated ones. */
function eventsFor(rules: Rule[]): fc.Arbitrary<ConnectionEvent[]> {
  if (rules.length === 0) return fc.array(eventArb, { minLength: 1, maxLength: 8 });
  const aimed = fc.tuple(
    fc.nat(rules.length - 1),
    eventArb,
    fc.constantFrom("a", "x1", "derp1"),
    fc.constantFrom("/", "/repos/a", "/a/b", "/v1.zip"),
  )
    .map(([i, base, fill, path]) => {
      const rule = rules[i];
      const event: ConnectionEvent = { ...base, dst_port: rule.port === "*" ? base.dst_port : rule.port[0] };
      const host = instantiate(
        rule.type === "path"
          ? rule.url_base!.split("/")[2]
          : rule.target.split("/")[rule.type === "url" ? 2 : 0],
        fill,
      );
      if (rule.type === "url" || rule.type === "path") {
        const scheme = rule.type === "url" ? rule.target.split(":")[0] : "https";
        event.type = scheme === "http" ? "http" : "https";
        event.url = `${scheme}://${host}${
          rule.type === "path" && rule.url_base!.includes("/api") ? "/api" : ""
        }${path}`;
        delete event.host;
      } else if (rule.type === "ip" || rule.type === "cidr") {
        event.dst_ip = rule.target.split("/")[0];
        event.type = rule.protocol === "udp" ? "udp" : "tcp";
      } else if (rule.type === "dns_host" || rule.type === "dns_wildcard_host") {
        event.type = "dns";
        event.name = host;
      } else {
        event.type = rule.protocol === "udp" ? "udp" : "https";
        event.host = host;
      }
      return event;
    });
  return fc.array(fc.oneof(aimed, eventArb), { minLength: 1, maxLength: 8 });
}

Deno.test("property: indexed match equals a naive linear scan", () => {
  const rulesAndEvents = fc.array(ruleArb, { maxLength: 25 }).chain((rules) =>
    fc.tuple(fc.constant(rules), eventsFor(rules))
  );
  fc.assert(
    fc.property(rulesAndEvents, ([rules, events]) => {
      const compiled = compiledRules(rules);
      for (const event of events) assert.deepEqual(compiled.match(event), linearMatch(rules, event));
    }),
    { numRuns: 400 },
  );
});

Deno.test("property: audit mode never blocks and reports the enforce-mode verdict", () => {
  fc.assert(
    fc.property(
      fc.array(ruleArb, { maxLength: 15 }).chain((rules) => fc.tuple(fc.constant(rules), eventsFor(rules))),
      fc.boolean(),
      fc.boolean(),
      fc.option(hostname, { nil: undefined }),
      ([rules, events], mitm, corroborate, cachedName) => {
        const event = events[0];
        const cache = new DnsCache({ now: () => 0 });
        if (cachedName) cache.add(cachedName, [event.dst_ip], 300);
        const enforce = new Enforcer(new Policy(rules), { dnsCache: cache, corroborate }).decide(event, {
          mitm,
        });
        const audit = new Enforcer(new Policy(rules), { dnsCache: cache, corroborate, audit: true }).decide(
          event,
          {
            mitm,
          },
        );
        assert.equal(audit.allowed, true);
        assert.equal(enforce.allowed, enforce.policy === "allow");
        assert.deepEqual({ ...audit, allowed: enforce.allowed }, enforce);
        if (!enforce.allowed) assert.deepEqual([enforce.passthrough, enforce.insecure], [false, false]);
        assert.ok(!(enforce.passthrough && enforce.insecure));
      },
    ),
    { numRuns: 400 },
  );
});

Deno.test("property: Enforcer agrees with the generic match for https requests and udp flows", () => {
  fc.assert(
    fc.property(fc.array(ruleArb, { maxLength: 15 }), eventArb, (rules, raw) => {
      const enforcer = new Enforcer(new Policy(rules));
      if (raw.type === "udp") {
        const event = { type: "udp" as const, dst_ip: raw.dst_ip, dst_port: raw.dst_port, exe: raw.exe };
        assert.equal(enforcer.decide(event).index, compiledRules(rules).match(event)?.index);
      } else if (raw.url !== undefined) {
        const event = { ...raw, type: "https" as const, host: undefined, name: undefined };
        delete event.host;
        delete event.name;
        assert.equal(enforcer.decide(event).index, compiledRules(rules).match(event)?.index);
      }
    }),
    RUNS,
  );
});
