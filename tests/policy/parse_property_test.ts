// Property tests of the parser: no exception but PolicyError on any text, validatePolicy never
// throws, issues always point into the text, and generated valid rules give the expected JSON.
import assert from "node:assert/strict";
import fc from "fast-check";
import { parsePolicy, PolicyError, validatePolicy } from "../../src/policy/policy.ts";
import type { AttrValue, Rule } from "../../src/policy/types.ts";
import { splitLines } from "../../src/policy/lines.ts";

const RUNS = { numRuns: 400 };

// Pieces of policy syntax, so that random lines get deep into the grammar.
const PIECES = [
  " ",
  "\t",
  "#",
  "[",
  "]",
  ":",
  "|",
  "/",
  "*",
  ".",
  "-",
  "=",
  "`",
  '"',
  "{owner}",
  "{repo}",
  "?",
  "@",
  "_",
  "a",
  "x",
  "com",
  "github",
  "0",
  "1",
  "53",
  "443",
  "65536",
  "255",
  "256",
  "https",
  "http",
  "://",
  "dns:",
  "GET",
  "POST",
  "*",
  "tcp",
  "udp",
  "passthrough",
  "insecure",
  "exe",
  "arg",
  "arg[1]",
  "cgroup",
  "step",
  "action",
  "image",
  "user",
  "@docker",
  "\n",
  "\r",
  "\u2028",
  "\ufeff",
  "\u{1F600}",
  "é",
  "\0",
];
const lineish = fc.array(fc.constantFrom(...PIECES), { maxLength: 25 }).map((p) => p.join(""));
const anyText = fc.oneof(fc.string({ unit: "binary", maxLength: 80 }), fc.string({ maxLength: 80 }), lineish);
const options = fc.record(
  { runner: fc.boolean(), repository: fc.constantFrom("octo/hello", "bad owner/x", "a/b/c", "noslash") },
  { requiredKeys: [] },
);

Deno.test("property: parsePolicy throws nothing but PolicyError", () => {
  fc.assert(
    fc.property(anyText, options, (text, opts) => {
      try {
        parsePolicy(text, opts);
      } catch (e) {
        if (!(e instanceof PolicyError)) throw e;
        assert.ok(e.issues.length > 0);
      }
    }),
    RUNS,
  );
});

Deno.test("property: validatePolicy never throws; issues point into the text", () => {
  fc.assert(
    fc.property(anyText, options, (text, opts) => {
      const r = validatePolicy(text, opts);
      const lines = splitLines(text);
      for (const issue of [...r.errors, ...r.warnings]) {
        if (issue.line === 0) {
          assert.equal(issue.column, 0);
          continue;
        }
        const line = lines[issue.line - 1];
        assert.equal(issue.text, line.text);
        assert.ok(issue.column >= 1 && issue.column <= [...line.text].length + 1, JSON.stringify(issue));
        assert.ok(issue.message.length > 0);
      }
      // At most one error per line, and no rule for a line with an error.
      const errorLines = new Set(r.errors.map((e) => e.line));
      assert.equal(errorLines.size, r.errors.length);
      for (const rule of r.rules) assert.ok(!errorLines.has(rule.line));
    }),
    RUNS,
  );
});

Deno.test("property: parsePolicy and validatePolicy agree", () => {
  fc.assert(
    fc.property(lineish, (text) => {
      const r = validatePolicy(text);
      try {
        const policy = parsePolicy(text);
        assert.equal(r.errors.length, 0);
        assert.deepEqual(policy.toJSON(), r.rules);
        assert.deepEqual([...policy.warnings], r.warnings);
      } catch (e) {
        assert.ok(e instanceof PolicyError);
        assert.deepEqual(e.issues, r.errors);
      }
    }),
    RUNS,
  );
});

// ---------------------------------------------------------------------------------------------
// Generated valid rules

const label = fc.stringMatching(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?$/);
const tld = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9]{0,4}$/);
// At most three labels before the TLD, so the first four are never all digits.
const hostname = fc.tuple(fc.array(label, { minLength: 1, maxLength: 3 }), tld).map(([l, t]) =>
  [...l, t].join(".")
);
const wildcard = fc.tuple(fc.constantFrom("*", "*-prod", "derp*", "*.*", "*.a*"), hostname).map(([w, h]) =>
  `${w}.${h}`
);
const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join("."));
const portList = fc.oneof(
  fc.constant<"*">("*"),
  fc.array(fc.integer({ min: 1, max: 65535 }), { minLength: 1, maxLength: 3 }),
);
const written = (ports: number[] | "*") => (ports === "*" ? ":*" : ":" + ports.join("|"));

type Attr = { key: string; value: AttrValue; text: string };
const attrValue: fc.Arbitrary<{ value: AttrValue; text: string }> = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9/*._@-][A-Za-z0-9/*._=?"`-]{0,8}$/).map((v) => ({ value: v, text: v })),
  // deno-lint-ignore no-control-regex
  fc.stringMatching(/^[^`\n\r\v\f\x1c-\x1e\x85\u2028\u2029]{0,8}$/).map((v) => ({
    value: { value: v, literal: false },
    text: "`" + v + "`",
  })),
  // deno-lint-ignore no-control-regex
  fc.stringMatching(/^[^"\n\r\v\f\x1c-\x1e\x85\u2028\u2029]{0,8}$/).map((v) => ({
    value: { value: v, literal: true },
    text: '"' + v + '"',
  })),
);
const attrs = fc.uniqueArray(
  fc.tuple(fc.constantFrom("exe", "arg", "arg[0]", "arg[3]", "cgroup", "step", "action", "image"), attrValue),
  { selector: ([k]) => k, maxLength: 3 },
).map((list) => list.map(([key, v]): Attr => ({ key, value: v.value, text: `${key}=${v.text}` })));
const pad = fc.constantFrom("", " ", "\t", "  ");
const comment = fc.constantFrom("", " # note", '\t# [x] `y` "z"');

type Case = { text: string; rule: Rule };

const netCase: fc.Arbitrary<Case> = fc
  .tuple(
    fc.oneof(
      hostname.map((t) => ({ type: "host" as const, t, w: t })),
      wildcard.map((t) => ({ type: "wildcard_host" as const, t, w: t })),
      ipv4.map((t) => ({ type: "ip" as const, t, w: t })),
      fc.tuple(ipv4, fc.integer({ min: 0, max: 32 })).map(([ip, m]) => ({
        type: "cidr" as const,
        t: `${ip}/${m}`,
        w: `${ip}/${m}`,
      })),
      hostname.map((t) => ({ type: "dns_host" as const, t, w: `dns:${t}` })),
      wildcard.map((t) => ({ type: "dns_wildcard_host" as const, t, w: `dns:${t}` })),
    ),
    fc.option(fc.tuple(portList, fc.option(fc.constantFrom<"tcp" | "udp">("tcp", "udp")))),
    fc.constantFrom("none", "passthrough", "insecure"),
    attrs,
    pad,
    pad,
    comment,
  )
  .filter(([target, ports, flag]) => {
    const dns = target.type.startsWith("dns");
    if (dns && ports !== null) return false; // would warn
    if (flag === "passthrough" && target.type !== "host" && target.type !== "wildcard_host") return false;
    return !(flag === "insecure" && dns);
  })
  .map(([target, ports, flag, attrList, before, after, note]) => {
    const parts = [target.w + (ports ? written(ports[0]) + (ports[1] ? "/" + ports[1] : "") : "")];
    if (flag !== "none") parts.push(flag);
    parts.push(...attrList.map((a) => a.text));
    const rule: Rule = {
      type: target.type,
      target: target.t,
      port: ports ? ports[0] : [443],
      protocol: ports?.[1] ?? "tcp",
      methods: null,
      url_base: null,
      attrs: Object.fromEntries(attrList.map((a) => [a.key, a.value])),
      ...(flag === "passthrough" ? { passthrough: true as const } : {}),
      ...(flag === "insecure" ? { insecure: true as const } : {}),
      line: 1,
    };
    return { text: before + parts.join(" ") + after + note, rule };
  });

const PCHARS = "ABCabc019._~!$&'()*+,;=:@%/-";
const pathText = fc.array(fc.constantFrom(...PCHARS), { maxLength: 12 }).map((c) => "/" + c.join(""));
const methods = fc.option(
  fc.uniqueArray(fc.constantFrom("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*"), {
    minLength: 1,
    maxLength: 3,
  }),
);

const urlCase: fc.Arbitrary<Case> = fc
  .tuple(
    methods,
    fc.constantFrom("http", "https"),
    fc.oneof(hostname, wildcard, ipv4),
    fc.option(portList),
    pathText,
    fc.boolean(),
    attrs,
    pad,
    comment,
  )
  .map(([m, scheme, host, ports, path, insecure, attrList, before, note]) => {
    const url = `${scheme}://${host}${ports ? written(ports) : ""}${path}`;
    const parts = [
      ...(m ? [m.join("|")] : []),
      url,
      ...(insecure ? ["insecure"] : []),
      ...attrList.map((a) => a.text),
    ];
    const rule: Rule = {
      type: "url",
      target: url,
      port: ports ?? [scheme === "http" ? 80 : 443],
      protocol: "tcp",
      methods: m ?? ["GET", "HEAD"],
      url_base: null,
      attrs: Object.fromEntries(attrList.map((a) => [a.key, a.value])),
      ...(insecure ? { insecure: true as const } : {}),
      line: 1,
    };
    return { text: before + parts.join(" ") + note, rule };
  });

Deno.test("property: generated valid rules round-trip to the expected JSON", () => {
  fc.assert(
    fc.property(fc.oneof(netCase, urlCase), ({ text, rule }) => {
      const policy = parsePolicy(text);
      assert.deepEqual(policy.toJSON(), [rule], text);
      assert.equal(JSON.stringify(policy.toJSON()[0]), JSON.stringify(rule));
    }),
    { numRuns: 600 },
  );
});

Deno.test("property: a line with an error never changes the rules of the other lines", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(netCase, urlCase), { minLength: 1, maxLength: 5 }),
      lineish,
      (cases, noise) => {
        const clean = validatePolicy(cases.map((c) => c.text).join("\n"));
        const noisy = validatePolicy([...cases.map((c) => c.text), noise].join("\n"));
        // The noise line is last: it cannot change the rules before it.
        assert.deepEqual(noisy.rules.slice(0, clean.rules.length), clean.rules);
      },
    ),
    RUNS,
  );
});
