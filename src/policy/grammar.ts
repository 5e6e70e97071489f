// The line grammar of policy.md §2, written with typescript-parsec. Pure: no Deno, no node:.
//
// Each line is lexed into three token kinds (runs of WS, runs of ASCII letters/digits, and single
// code points), so token offsets give exact columns. The combinators enumerate every candidate
// parse in grammar order; the first candidate that consumes the whole line and carries no
// semantic error wins (ordered choice). Checks that the combinators cannot phrase well (port
// ranges, unknown keys, unterminated quotes, …) are attached to the parse result as issues, and a
// line that no candidate parses goes through `diagnose`, which names the most likely problem.

import {
  alt,
  alt_sc,
  apply,
  expectEOF,
  kright,
  opt_sc,
  type ParseError,
  type Parser,
  type ParserOutput,
  seq,
  str,
  succ,
  tok,
  type Token,
  type TokenPosition,
} from "typescript-parsec";
import type { AttrValue } from "./types.ts";

enum T {
  WS,
  ALNUM,
  CH,
}

// The library's buildLexer re-slices the rest of the input for every token (quadratic on long
// lines), so tokens come from sticky regexes over the whole line instead, produced lazily.
const WS_RUN = /[ \t]+/y;
const ALNUM_RUN = /[A-Za-z0-9]+/y;
const ONE_CODE_POINT = /[^]/uy;

class LineToken implements Token<T> {
  private following: LineToken | undefined | null = null;
  readonly pos: TokenPosition;
  constructor(readonly kind: T, readonly text: string, index: number, private readonly source: string) {
    this.pos = { index, rowBegin: 1, columnBegin: index + 1, rowEnd: 1, columnEnd: index + 1 + text.length };
  }
  get next(): LineToken | undefined {
    if (this.following === null) this.following = tokenAt(this.source, this.pos.index + this.text.length);
    return this.following;
  }
}

function tokenAt(source: string, index: number): LineToken | undefined {
  if (index >= source.length) return undefined;
  for (const [re, kind] of [[WS_RUN, T.WS], [ALNUM_RUN, T.ALNUM], [ONE_CODE_POINT, T.CH]] as const) {
    re.lastIndex = index;
    const m = re.exec(source);
    if (m !== null) return new LineToken(kind, m[0], index, source);
  }
  return undefined;
}

/** A problem found while parsing a line; `index` is a UTF-16 offset into the parsed text. */
export type SyntaxIssue = { index: number; message: string };

export type AttrAst = { key: string; index: number; value: AttrValue };
export type PortsAst = { ports: number[] | "*"; text: string; index: number };
export type HostKind = "ip" | "host" | "wildcard";
export type UrlAst = {
  scheme: "http" | "https";
  host: string;
  hostKind: HostKind;
  ports: PortsAst | null;
  /** Path as written, from its first "/"; null only in a URL-base header without a path. */
  path: string | null;
  /** The URL as written. */
  text: string;
  index: number;
};
export type FlagAst = { index: number };
export type NetType = "host" | "wildcard_host" | "ip" | "cidr" | "dns_host" | "dns_wildcard_host";

export type RuleAst =
  | {
    kind: "url";
    index: number;
    methods: string[] | null;
    url: UrlAst;
    insecure: FlagAst | null;
    attrs: AttrAst[];
  }
  | {
    kind: "path";
    index: number;
    methods: string[] | null;
    path: string;
    pathIndex: number;
    insecure: FlagAst | null;
    attrs: AttrAst[];
  }
  | {
    kind: "net";
    index: number;
    type: NetType;
    target: string;
    ports: PortsAst | null;
    protocol: "tcp" | "udp" | null;
    passthrough: FlagAst | null;
    insecure: FlagAst | null;
    attrs: AttrAst[];
  };

export type HeaderCategory =
  | { kind: "passthrough" }
  | { kind: "insecure" }
  | { kind: "url"; url: UrlAst }
  | { kind: "methods"; methods: string[] }
  | { kind: "ports"; ports: PortsAst; protocol: "tcp" | "udp" | null };

export type LineAst =
  | { kind: "blank" }
  | { kind: "comment" }
  | { kind: "header"; index: number; category: HeaderCategory | null; attrs: AttrAst[] }
  | { kind: "rule"; rule: RuleAst };

/**
 * Result of parsing one line. On success `contentEnd` is the offset where the line's content
 * ends (before WS and an inline comment).
 */
export type LineResult =
  | { ok: true; line: LineAst; contentEnd: number }
  | { ok: false; issue: SyntaxIssue };

// ---------------------------------------------------------------------------------------------
// Parse state. Parsing is synchronous, so the text being parsed lives in module scope; `apply`
// callbacks use it to cut out the source of a token range.

let input = "";

type Range = [Token<T> | undefined, Token<T> | undefined];
const startOf = (range: Range): number => range[0]?.pos.index ?? input.length;
const endOf = (range: Range): number => range[1]?.pos.index ?? input.length;
const textOf = (range: Range): string => input.slice(startOf(range), endOf(range));

/** A value together with the semantic issues found inside it. */
type N<V> = { v: V; errs: SyntaxIssue[] };
const ok = <V>(v: V, errs: SyntaxIssue[] = []): N<V> => ({ v, errs });
const errsOf = (...nodes: (N<unknown> | undefined | null)[]): SyntaxIssue[] =>
  nodes.flatMap((n) => n?.errs ?? []);

/** Matches one token for which `test` holds. */
function one(test: (token: Token<T>) => boolean): Parser<T, Token<T>> {
  return {
    parse(token) {
      if (token === undefined || !test(token)) {
        return {
          successful: false,
          error: { kind: "Error", pos: token?.pos, message: "unexpected token" },
        };
      }
      return {
        successful: true,
        candidates: [{ firstToken: token, nextToken: token.next, result: token }],
        error: undefined,
      };
    },
  };
}

/** list_sc on top of the linear rep_sc: p *( s p ). */
function list_sc<V, S>(p: Parser<T, V>, s: Parser<T, S>): Parser<T, V[]> {
  return apply(seq(p, rep_sc(kright(s, p))), ([a, b]) => [a, ...b]);
}

/** Keeps only the candidates of `p` whose value satisfies `test`. */
function where<V>(p: Parser<T, V>, test: (value: V) => boolean): Parser<T, V> {
  return {
    parse(token) {
      const out = p.parse(token);
      if (!out.successful) return out;
      const candidates = out.candidates.filter((c) => test(c.result));
      if (candidates.length === 0) {
        return {
          successful: false,
          error: out.error ?? { kind: "Error", pos: token?.pos, message: "unexpected token" },
        };
      }
      return { successful: true, candidates, error: out.error };
    },
  };
}

/**
 * Greedy repetition (like rep_sc) for the deterministic parsers of this grammar: it follows the
 * first candidate of each step and appends in place, so long lines stay linear.
 */
function rep_sc<V>(p: Parser<T, V>): Parser<T, V[]> {
  return {
    parse(token) {
      const values: V[] = [];
      let at = token;
      let error: ParseError | undefined;
      for (;;) {
        const out = p.parse(at);
        error = furthest(error, out.error);
        if (!out.successful || out.candidates.length === 0) break;
        const next = out.candidates[0].nextToken;
        if (next === at) break;
        values.push(out.candidates[0].result);
        at = next;
      }
      return { successful: true, candidates: [{ firstToken: token, nextToken: at, result: values }], error };
    },
  };
}

function furthest(a: ParseError | undefined, b: ParseError | undefined): ParseError | undefined {
  if (a === undefined) return b;
  if (b === undefined || a.pos === undefined) return a;
  if (b.pos === undefined) return b;
  return b.pos.index > a.pos.index ? b : a;
}

const rep1 = <V>(p: Parser<T, V>): Parser<T, V[]> => apply(seq(p, rep_sc(p)), ([a, b]) => [a, ...b]);

const ws = tok(T.WS);
const ch = (c: string) => str<T>(c);
const word = (w: string) => str<T>(w);
const alnum = tok(T.ALNUM);
const digits = one((t) => t.kind === T.ALNUM && /^[0-9]+$/.test(t.text));
const letters = one((t) => t.kind === T.ALNUM && /^[A-Za-z]+$/.test(t.text));
const anyToken = one(() => true);

// ---------------------------------------------------------------------------------------------
// Hostnames and addresses

const hyphens = rep1(ch("-"));
/** label = ALNUM [ *( ALNUM | "-" ) ALNUM ]; ALNUM tokens are maximal runs. */
const label = apply(seq(alnum, rep_sc(seq(hyphens, alnum))), (_v, r) => textOf(r));
const tld = apply(one((t) => t.kind === T.ALNUM && /^[A-Za-z]/.test(t.text)), (t) => t.text);

/** hostname = 1*( label "." ) tld, with the rule that the first four labels are not all digits. */
const hostname: Parser<T, N<string>> = apply(
  seq(rep1(seq(label, ch("."))), tld),
  ([pairs, last], r) => {
    const labels = [...pairs.map((p) => p[0]), last];
    const errs: SyntaxIssue[] = [];
    if (labels.length >= 4 && labels.slice(0, 4).every((l) => /^[0-9]+$/.test(l))) {
      errs.push({
        index: startOf(r),
        message: "the first four labels of a hostname cannot all be numeric (an IP address?)",
      });
    }
    return ok(textOf(r), errs);
  },
);

/** wlabel = *( ALNUM | "-" ) "*" *( ALNUM | "-" | "*" ) */
const wlabel = where(
  apply(rep1(alt_sc(alnum, ch("-"), ch("*"))), (_v, r) => textOf(r)),
  (text) => text.includes("*"),
);
const hostOrTld: Parser<T, N<string>> = alt_sc(hostname, apply(tld, (t) => ok(t)));

/** wild-host = "*." wlabel "." ( hostname | tld ) | wlabel "." ( hostname | tld ) */
const wildHost: Parser<T, N<string>> = alt(
  apply(seq(ch("*"), ch("."), wlabel, ch("."), hostOrTld), (v, r) => ok(textOf(r), v[4].errs)),
  apply(seq(wlabel, ch("."), hostOrTld), (v, r) => ok(textOf(r), v[2].errs)),
);

function octetErrors(token: Token<T>): SyntaxIssue[] {
  const text = token.text;
  if (text.length > 1 && text[0] === "0") {
    return [{ index: token.pos.index, message: `octet "${text}" must not have a leading zero` }];
  }
  if (text.length > 3 || Number(text) > 255) {
    return [{ index: token.pos.index, message: `octet ${text} is outside 0..255` }];
  }
  return [];
}

/** ipv4 = octet 3( "." octet ) */
const ipv4: Parser<T, N<string>> = apply(
  seq(digits, ch("."), digits, ch("."), digits, ch("."), digits),
  (v, r) => ok(textOf(r), [v[0], v[2], v[4], v[6]].flatMap(octetErrors)),
);

/** cidr = ipv4 "/" mask */
const cidr: Parser<T, N<string>> = apply(seq(ipv4, ch("/"), digits), ([ip, _slash, mask], r) => {
  const errs = [...ip.errs];
  if (mask.text.length > 1 && mask.text[0] === "0") {
    errs.push({ index: mask.pos.index, message: `mask "${mask.text}" must not have a leading zero` });
  } else if (mask.text.length > 2 || Number(mask.text) > 32) {
    errs.push({ index: mask.pos.index, message: `mask ${mask.text} is outside 0..32` });
  }
  return ok(textOf(r), errs);
});

type TargetAst = { type: NetType; target: string };

/** target = cidr | ip | "dns:" ( wild-host | hostname ) | wild-host | hostname */
const target: Parser<T, N<TargetAst>> = alt(
  apply(cidr, (n) => ok<TargetAst>({ type: "cidr", target: n.v }, n.errs)),
  apply(ipv4, (n) => ok<TargetAst>({ type: "ip", target: n.v }, n.errs)),
  apply(
    kright(seq(word("dns"), ch(":")), wildHost),
    (n) => ok<TargetAst>({ type: "dns_wildcard_host", target: n.v }, n.errs),
  ),
  apply(
    kright(seq(word("dns"), ch(":")), hostname),
    (n) => ok<TargetAst>({ type: "dns_host", target: n.v }, n.errs),
  ),
  apply(wildHost, (n) => ok<TargetAst>({ type: "wildcard_host", target: n.v }, n.errs)),
  apply(hostname, (n) => ok<TargetAst>({ type: "host", target: n.v }, n.errs)),
);

// ---------------------------------------------------------------------------------------------
// Ports, protocol, methods

/** ports = ":" ( "*" | port *( "|" port ) ); numbers are checked here to give precise messages. */
const ports: Parser<T, N<PortsAst>> = apply(
  seq(ch(":"), list_sc(alt_sc(digits, ch("*")), ch("|"))),
  ([_colon, items], r) => {
    const errs: SyntaxIssue[] = [];
    const star = items.find((t) => t.text === "*");
    if (star !== undefined && items.length > 1) {
      errs.push({ index: star.pos.index, message: `"*" cannot be combined with other ports` });
    }
    for (const item of items) {
      if (item.text === "*") continue;
      if (item.text[0] === "0" && item.text.length > 1) {
        errs.push({ index: item.pos.index, message: `port "${item.text}" must not have a leading zero` });
      } else if (item.text.length > 5 || Number(item.text) < 1 || Number(item.text) > 65535) {
        errs.push({ index: item.pos.index, message: `port ${item.text} is outside 1..65535` });
      }
    }
    const list: number[] | "*" = star !== undefined ? "*" : items.map((t) => Number(t.text));
    return ok({ ports: list, text: textOf(r), index: startOf(r) }, errs);
  },
);

/** "/" proto, proto = "tcp" | "udp" */
const protocol: Parser<T, N<"tcp" | "udp">> = apply(seq(ch("/"), letters), ([_slash, name]) => {
  if (name.text === "tcp" || name.text === "udp") return ok(name.text);
  return ok("tcp" as const, [{
    index: name.pos.index,
    message: `unknown protocol "${name.text}" (use tcp or udp)`,
  }]);
});

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*"]);

/** methods = method *( "|" method ) */
const methods: Parser<T, N<string[]>> = apply(
  list_sc(alt_sc(letters, ch("*")), ch("|")),
  (items) => {
    const errs: SyntaxIssue[] = [];
    for (const item of items) {
      if (!METHODS.has(item.text)) {
        const hint = METHODS.has(item.text.toUpperCase()) ? " (methods are upper-case)" : "";
        errs.push({ index: item.pos.index, message: `unknown method "${item.text}"${hint}` });
      }
    }
    return ok(items.map((t) => t.text), errs);
  },
);

// ---------------------------------------------------------------------------------------------
// URLs

const PCHAR = /^[A-Za-z0-9._~!$&'()*+,;=:@%/-]+$/;
const pchar = one((t) => t.kind !== T.WS && PCHAR.test(t.text));
const path = apply(seq(ch("/"), rep_sc(pchar)), (_v, r) => ({ text: textOf(r), index: startOf(r) }));

const scheme: Parser<T, N<"http" | "https">> = apply(seq(letters, ch(":"), ch("/"), ch("/")), ([name]) => {
  if (name.text === "http" || name.text === "https") return ok(name.text);
  return ok("https" as const, [{
    index: name.pos.index,
    message: `unsupported scheme "${name.text}" (use http or https)`,
  }]);
});

/** url-host = ipv4 | wild-host | hostname */
const urlHost: Parser<T, N<{ host: string; kind: HostKind }>> = alt(
  apply(ipv4, (n) => ok({ host: n.v, kind: "ip" as HostKind }, n.errs)),
  apply(wildHost, (n) => ok({ host: n.v, kind: "wildcard" as HostKind }, n.errs)),
  apply(hostname, (n) => ok({ host: n.v, kind: "host" as HostKind }, n.errs)),
);

function urlParser(pathRequired: boolean): Parser<T, N<UrlAst>> {
  const pathPart = pathRequired ? apply(path, (p) => p as typeof p | undefined) : opt_sc(path);
  return apply(seq(scheme, urlHost, opt_sc(ports), pathPart), ([s, h, p, pth], r) =>
    ok<UrlAst>({
      scheme: s.v,
      host: h.v.host,
      hostKind: h.v.kind,
      ports: p?.v ?? null,
      path: pth?.text ?? null,
      text: textOf(r),
      index: startOf(r),
    }, errsOf(s, h, p)));
}
const urlWithPath = urlParser(true);
const urlBase = urlParser(false);

// ---------------------------------------------------------------------------------------------
// Attributes

const KEYS = new Set(["arg", "exe", "cgroup", "step", "action", "image"]);

const key: Parser<T, N<string>> = apply(
  seq(alnum, opt_sc(seq(ch("["), alnum, ch("]")))),
  ([name, index], r) => {
    const written = textOf(r);
    if (index === undefined && KEYS.has(name.text)) return ok(name.text);
    if (index !== undefined && name.text === "arg" && /^[0-9]+$/.test(index[1].text)) {
      return ok(`arg[${BigInt(index[1].text)}]`);
    }
    return ok(written, [{ index: startOf(r), message: `unknown attribute "${written}"` }]);
  },
);

function quoted(quote: string, literal: boolean): Parser<T, N<AttrValue>> {
  return apply(
    seq(ch(quote), rep_sc(one((t) => t.text !== quote)), opt_sc(ch(quote))),
    ([open, body, close]) => {
      const value = body.map((t) => t.text).join("");
      const errs = close === undefined ? [{ index: open.pos.index, message: "unterminated quote" }] : [];
      return ok<AttrValue>({ value, literal }, errs);
    },
  );
}

const unquoted: Parser<T, N<AttrValue>> = apply(
  seq(
    one((t) => t.kind !== T.WS && !['"', "`", "#", "]"].includes(t.text)),
    rep_sc(one((t) => t.kind !== T.WS && t.text !== "#" && t.text !== "]")),
  ),
  (_v, r) => ok<AttrValue>(textOf(r)),
);

const value: Parser<T, N<AttrValue>> = alt_sc(quoted("`", false), quoted('"', true), unquoted);

/** kv = key "=" value; an empty value gets its own message. */
const kv: Parser<T, N<AttrAst>> = apply(seq(key, ch("="), opt_sc(value)), ([k, _eq, v], r) => {
  const errs = errsOf(k, v);
  if (v === undefined) {
    errs.push({ index: endOf(r), message: `attribute "${textOf(r).slice(0, -1)}" needs a value` });
  }
  return ok<AttrAst>({ key: k.v, index: startOf(r), value: v?.v ?? "" }, errs);
});

/** kvs = 1*( 1*WS kv ); optional everywhere it is used. */
const kvs: Parser<T, N<AttrAst[]>> = apply(
  rep_sc(kright(ws, kv)),
  (items) => ok(items.map((i) => i.v), errsOf(...items)),
);

const flag = (name: string): Parser<T, FlagAst | undefined> =>
  opt_sc(apply(kright(ws, word(name)), (t) => ({ index: t.pos.index })));

// ---------------------------------------------------------------------------------------------
// Rules

const methodsPrefix = opt_sc(apply(seq(methods, ws), ([m]) => m));

const urlRule: Parser<T, N<RuleAst>> = apply(
  seq(methodsPrefix, urlWithPath, flag("insecure"), kvs),
  ([m, url, insecure, attrs], r) =>
    ok<RuleAst>({
      kind: "url",
      index: startOf(r),
      methods: m?.v ?? null,
      url: url.v,
      insecure: insecure ?? null,
      attrs: attrs.v,
    }, errsOf(m, url, attrs)),
);

const pathRule: Parser<T, N<RuleAst>> = apply(
  seq(methodsPrefix, path, flag("insecure"), kvs),
  ([m, p, insecure, attrs], r) =>
    ok<RuleAst>({
      kind: "path",
      index: startOf(r),
      methods: m?.v ?? null,
      path: p.text,
      pathIndex: p.index,
      insecure: insecure ?? null,
      attrs: attrs.v,
    }, errsOf(m, attrs)),
);

const portsAndProtocol = opt_sc(seq(ports, opt_sc(protocol)));

const netRule: Parser<T, N<RuleAst>> = apply(
  seq(target, portsAndProtocol, flag("passthrough"), flag("insecure"), kvs),
  ([t, pp, passthrough, insecure, attrs], r) =>
    ok<RuleAst>({
      kind: "net",
      index: startOf(r),
      type: t.v.type,
      target: t.v.target,
      ports: pp?.[0].v ?? null,
      protocol: pp?.[1]?.v ?? null,
      passthrough: passthrough ?? null,
      insecure: insecure ?? null,
      attrs: attrs.v,
    }, errsOf(t, pp?.[0], pp?.[1], attrs)),
);

// ---------------------------------------------------------------------------------------------
// Headers

type HeaderBody = { category: HeaderCategory | null; attrs: AttrAst[] };

const attrsOnly: Parser<T, N<HeaderBody>> = apply(
  seq(kv, kvs),
  ([first, rest]) => ok({ category: null, attrs: [first.v, ...rest.v] }, errsOf(first, rest)),
);

const hbody: Parser<T, N<HeaderBody>> = alt(
  apply(
    kright(word("passthrough"), kvs),
    (a) => ok<HeaderBody>({ category: { kind: "passthrough" }, attrs: a.v }, a.errs),
  ),
  apply(
    kright(word("insecure"), kvs),
    (a) => ok<HeaderBody>({ category: { kind: "insecure" }, attrs: a.v }, a.errs),
  ),
  apply(
    seq(urlBase, kvs),
    ([u, a]) => ok<HeaderBody>({ category: { kind: "url", url: u.v }, attrs: a.v }, errsOf(u, a)),
  ),
  apply(
    seq(methods, kvs),
    ([m, a]) => ok<HeaderBody>({ category: { kind: "methods", methods: m.v }, attrs: a.v }, errsOf(m, a)),
  ),
  apply(
    seq(ports, opt_sc(protocol), kvs),
    ([p, proto, a]) =>
      ok<HeaderBody>(
        { category: { kind: "ports", ports: p.v, protocol: proto?.v ?? null }, attrs: a.v },
        errsOf(p, proto, a),
      ),
  ),
  attrsOnly,
);

const headerBody: Parser<T, N<HeaderBody>> = alt(hbody, succ(ok<HeaderBody>({ category: null, attrs: [] })));

// ---------------------------------------------------------------------------------------------
// Lines

type Content = { line: LineAst; end: number };

/** trail = [ 1*WS "#" *ANY ] *WS */
const trail = seq(opt_sc(seq(ws, ch("#"), rep_sc(anyToken))), opt_sc(ws));
const leading = opt_sc(ws);

function withTrail(p: Parser<T, N<LineAst>>): Parser<T, N<Content>> {
  return apply(
    seq(leading, apply(p, (n, r) => ({ n, end: endOf(r) })), trail),
    ([_lead, c]) => ok({ line: c.n.v, end: c.end }, c.n.errs),
  );
}

const header = withTrail(apply(
  seq(ch("["), headerBody, ch("]")),
  ([_open, body], r) =>
    ok<LineAst>(
      { kind: "header", index: startOf(r), category: body.v.category, attrs: body.v.attrs },
      body.errs,
    ),
));

const rule = withTrail(apply(
  alt(urlRule, pathRule, netRule),
  (n) => ok<LineAst>({ kind: "rule", rule: n.v }, n.errs),
));

const blankOrComment: Parser<T, N<Content>> = apply(
  seq(leading, opt_sc(seq(ch("#"), rep_sc(anyToken)))),
  ([_lead, comment]) => ok({ line: comment ? { kind: "comment" } : { kind: "blank" }, end: 0 } as Content),
);

const lineParser: Parser<T, N<Content>> = alt(blankOrComment, header, rule);

/** Parses one line (after placeholder substitution). Never throws. */
export function parseLine(text: string): LineResult {
  input = text;
  try {
    const output: ParserOutput<T, N<Content>> = expectEOF(lineParser.parse(tokenAt(text, 0)));
    if (output.successful && output.candidates.length > 0) {
      const clean = output.candidates.find((c) => c.result.errs.length === 0);
      if (clean !== undefined) {
        return { ok: true, line: clean.result.v.line, contentEnd: clean.result.v.end };
      }
      const errs = output.candidates[0].result.errs;
      const first = errs.reduce((a, b) => (b.index < a.index ? b : a));
      return { ok: false, issue: first };
    }
    const furthest = output.successful ? text.length : output.error.pos?.index ?? text.length;
    return { ok: false, issue: diagnose(text, furthest) };
  } finally {
    input = "";
  }
}

// ---------------------------------------------------------------------------------------------
// Targeted diagnosis of lines that no candidate parses

const FLAG_WORDS = ["passthrough", "insecure"];

/** Names the most likely problem of a line that does not parse; `furthest` is where parsing stopped. */
export function diagnose(text: string, furthest: number): SyntaxIssue {
  const start = text.search(/[^ \t]/);
  if (start < 0) return { index: furthest, message: "unexpected end of line" };
  // Content up to an inline comment (a "#" after WS outside quotes) is what we look at.
  const content = contentOf(text, start);
  const quote = unterminatedQuote(text, start);
  if (quote !== undefined) return { index: quote, message: "unterminated quote" };

  if (text[start] === "[") return diagnoseHeader(text, start, content, furthest);

  const words = wordsOf(text, start, content);
  let first = words[0];
  const methodList = /^[A-Za-z*]+(\|[A-Za-z*]+)*$/.test(first.text);
  if (methodList && words.length > 1) {
    if (!/^(\/|[A-Za-z]+:\/\/)/.test(words[1].text)) {
      if (/^[A-Z*|]+$/.test(first.text)) {
        return { index: first.index, message: "methods apply only to URL and path rules" };
      }
    } else {
      first = words[1];
    }
  }
  const isUrl = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(first.text);
  const isPath = first.text.startsWith("/");
  const found = (isUrl ? diagnoseUrl(first.text, first.index, true) : undefined) ??
    (isPath ? diagnoseTarget(first.text, first.index) : undefined) ??
    misplacedHash(text, start) ??
    (isUrl ? undefined : diagnoseTarget(first.text, first.index)) ??
    diagnoseOrder(words.slice(words.indexOf(first)), isUrl || first.text.startsWith("/"), /["`]/.test(text));
  if (found !== undefined) return found;
  return unexpectedAt(text, furthest);
}

type Word = { text: string; index: number };

function wordsOf(text: string, start: number, end: number): Word[] {
  const words: Word[] = [];
  const re = /[^ \t]+/g;
  re.lastIndex = start;
  for (let m = re.exec(text); m !== null && m.index < end; m = re.exec(text)) {
    words.push({ text: m[0], index: m.index });
  }
  return words;
}

/** Offset where the content ends: the first WS-preceded "#" outside quotes, else the line end. */
function contentOf(text: string, start: number): number {
  let quote: string | undefined;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
    } else if ((c === '"' || c === "`") && text[i - 1] === "=") {
      quote = c;
    } else if (c === "#" && (text[i - 1] === " " || text[i - 1] === "\t")) {
      return i;
    }
  }
  return text.length;
}

function unterminatedQuote(text: string, start: number): number | undefined {
  let open: number | undefined;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (open !== undefined) {
      if (c === text[open]) open = undefined;
    } else if ((c === '"' || c === "`") && text[i - 1] === "=") {
      open = i;
    } else if (c === "#" && (text[i - 1] === " " || text[i - 1] === "\t")) {
      return undefined;
    }
  }
  return open;
}

function misplacedHash(text: string, start: number): SyntaxIssue | undefined {
  const end = contentOf(text, start);
  const hash = text.slice(0, end).indexOf("#", start);
  if (hash > start) {
    return { index: hash, message: `"#" starts a comment only after a space or TAB` };
  }
  return undefined;
}

/** A code point as it appears in a message: quoted, or as U+XXXX when it is invisible. */
export function showChar(c: string): string {
  if (/^[\p{L}\p{N}\p{P}\p{S}]$/u.test(c) || c === " ") return JSON.stringify(c);
  return "U+" + c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
}

/** `unexpected "…"` for the letters/digits run or code point at `index` of `text`; `base` offsets the result. */
function unexpectedAt(text: string, index: number, base = 0): SyntaxIssue {
  if (index >= text.length) return { index: base + index, message: "unexpected end of line" };
  const run = /^[A-Za-z0-9]+/.exec(text.slice(index));
  const shown = run ? JSON.stringify(run[0]) : showChar(String.fromCodePoint(text.codePointAt(index)!));
  return { index: base + index, message: `unexpected ${shown}` };
}

function diagnoseHeader(text: string, start: number, end: number, furthest: number): SyntaxIssue {
  const close = text.lastIndexOf("]", end - 1);
  if (text[start + 1] === " " || text[start + 1] === "\t") {
    return { index: start + 1, message: "no space allowed just inside the brackets of a header" };
  }
  if (close < 0) return { index: end, message: `header needs a closing "]"` };
  if (text[close - 1] === " " || text[close - 1] === "\t") {
    return { index: close - 1, message: "no space allowed just inside the brackets of a header" };
  }
  const after = text.slice(close + 1, end);
  if (after.trim() !== "" || (text[close + 1] === "#")) {
    const hash = misplacedHash(text, start);
    if (hash !== undefined && hash.index > close) return hash;
    return unexpectedAt(text, close + 1 + (after.length - after.trimStart().length));
  }
  const body = text.slice(start + 1, close);
  const stray = body.search(/[[\]]/);
  if (stray >= 0 && !/[`"]/.test(body)) return unexpectedAt(text, furthest);
  const words = wordsOf(text, start + 1, close);
  if (words.length === 0) return unexpectedAt(text, furthest);
  const categories = words.filter((w) => !/^[a-z]+(\[[0-9]+\])?=/.test(w.text));
  if (categories.length > 1) {
    return { index: categories[1].index, message: "a header holds one category plus attributes" };
  }
  if (/^\/(tcp|udp)\b/.test(body)) {
    return { index: start + 1, message: `a protocol needs a port before it (e.g. ":*/udp")` };
  }
  if (categories.length === 1) {
    const w = categories[0];
    if (/^[A-Za-z]+:\/\//.test(w.text)) {
      const url = diagnoseUrl(w.text, w.index, false);
      if (url !== undefined) return url;
    } else if (!/^[:A-Z*]/.test(w.text) && w.text !== "passthrough" && w.text !== "insecure") {
      return {
        index: w.index,
        message: "a header cannot hold a rule (headers set ports, methods, a URL base, flags or attributes)",
      };
    }
  }
  return unexpectedAt(text, furthest);
}

/**
 * Words after the target: flags in the wrong place (`x.com exe=/a passthrough`, `x.com insecure
 * passthrough`, passthrough on a URL rule) and stray words. `words[0]` is the target or URL.
 */
function diagnoseOrder(words: Word[], web: boolean, quoted: boolean): SyntaxIssue | undefined {
  let seenAttr = false;
  let seenInsecure = false;
  const seenFlags = new Set<string>();
  for (const w of words.slice(1)) {
    if (seenFlags.has(w.text)) return { index: w.index, message: `"${w.text}" is given twice` };
    if (FLAG_WORDS.includes(w.text)) seenFlags.add(w.text);
    if (web && w.text === "passthrough") {
      const kind = words[0].text.startsWith("/") ? "path" : "url";
      return {
        index: w.index,
        message: `passthrough is allowed only on host and wildcard rules, not on ${kind} rules`,
      };
    }
    if (FLAG_WORDS.includes(w.text)) {
      if (seenAttr) return { index: w.index, message: `"${w.text}" must come before the attributes` };
      if (w.text === "passthrough" && seenInsecure) {
        return { index: w.index, message: `"passthrough" must come before "insecure"` };
      }
      if (w.text === "insecure") seenInsecure = true;
    } else if (w.text.includes("=")) {
      seenAttr = true;
    } else if (!quoted) {
      return unexpectedAt(w.text, 0, w.index);
    }
  }
  return undefined;
}

const IPV6 = /^\[?[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?(\/[0-9]+)?$/;
// The longest IPv6 literal with brackets, port text and a prefix stays well below this; longer words
// skip the regex, whose backtracking is quadratic on long runs of ":".
const IPV6_MAX_LENGTH = 64;

/** Diagnoses the first word of a rule: a URL, a path, or a network target with ports. */
function diagnoseTarget(text: string, index: number): SyntaxIssue | undefined {
  if (text.startsWith("/")) {
    const query = text.indexOf("?");
    if (query >= 0) return { index: index + query, message: 'a path rule cannot have a query ("?")' };
    const fragment = text.indexOf("#");
    if (fragment >= 0) {
      return { index: index + fragment, message: 'a path rule cannot have a fragment ("#")' };
    }
    return undefined;
  }
  const half = /^(https?):(?!\/\/)/.exec(text);
  if (half !== null) return { index: index + half[0].length, message: `expected "//" after "${half[0]}"` };
  let host = text;
  let offset = index;
  if (host.startsWith("dns:")) {
    host = host.slice(4);
    offset += 4;
    const bare = host.replace(/[:/].*$/, "");
    if (/^[0-9.]+$/.test(bare) && bare.includes(".")) {
      return { index: offset, message: "a dns: rule needs a hostname, not an IP address" };
    }
  }
  if (
    host.length <= IPV6_MAX_LENGTH && IPV6.test(host.replace(/\/(tcp|udp)$/, "")) &&
    (host.match(/:/g) ?? []).length >= 2
  ) {
    return { index: offset, message: "IPv6 literals are not supported" };
  }
  const slash = host.search(/[:/]/);
  const name = slash < 0 ? host : host.slice(0, slash);
  if (/^[0-9.]+$/.test(name)) {
    if (name.split(".").length !== 4) {
      return { index: offset, message: `IPv4 address "${name}" needs four octets` };
    }
    return undefined;
  }
  const hostIssue = diagnoseHost(name, offset);
  if (hostIssue !== undefined) return hostIssue;
  if (slash >= 0 && host[slash] === "/") {
    const rest = host.slice(slash);
    if (/^[0-9.]+$/.test(name)) return undefined;
    if (/^\/(tcp|udp)$/.test(rest)) {
      return {
        index: offset + slash,
        message: `a protocol needs a port before it (e.g. "${name}:*${rest}")`,
      };
    }
    return {
      index: offset + slash,
      message: `a rule with a path needs a scheme (e.g. "https://${name}${rest}")`,
    };
  }
  return undefined;
}

/** Diagnoses a hostname or host pattern; undefined if nothing specific is wrong with it. */
export function diagnoseHost(name: string, index: number): SyntaxIssue | undefined {
  if (name === "") return { index, message: "missing hostname" };
  if (name === "*") {
    return { index, message: `a bare "*" is not allowed (to allow everything use 0.0.0.0/0:*)` };
  }
  const bad = /[^A-Za-z0-9.*-]/.exec(name);
  if (bad !== null) {
    const shown = showChar(String.fromCodePoint(name.codePointAt(bad.index)!));
    return { index: index + bad.index, message: `invalid character ${shown} in hostname` };
  }
  if (name.endsWith(".")) {
    return { index: index + name.length - 1, message: "hostname must not end with a dot" };
  }
  if (name.startsWith(".")) return { index, message: "hostname must not start with a dot" };
  const labels = name.split(".");
  let pos = index;
  const offsets = labels.map((l) => {
    const at = pos;
    pos += l.length + 1;
    return at;
  });
  const wildcardLabels = labels[0] === "*" ? 2 : 1;
  for (let i = 0; i < labels.length; i++) {
    const star = labels[i].indexOf("*");
    if (star >= 0 && i >= wildcardLabels) {
      return { index: offsets[i] + star, message: "wildcard allowed only in the first label" };
    }
  }
  const lastStar = labels[labels.length - 1].indexOf("*");
  if (labels.length > 1 && lastStar >= 0) {
    return {
      index: offsets[labels.length - 1] + lastStar,
      message: "wildcard allowed only in the first label",
    };
  }
  if (labels.length < 2) {
    return { index, message: `hostname "${name}" needs at least two labels` };
  }
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (l === "") return { index: offsets[i], message: "empty label in hostname" };
    if (l.includes("*")) continue;
    if (l.startsWith("-") || l.endsWith("-")) {
      return {
        index: offsets[i] + (l.startsWith("-") ? 0 : l.length - 1),
        message: `label "${l}" must not start or end with "-"`,
      };
    }
  }
  const last = labels[labels.length - 1];
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(last)) {
    return {
      index: offsets[labels.length - 1],
      message: `top-level label "${last}" must start with a letter and hold only letters and digits`,
    };
  }
  return undefined;
}

function diagnoseUrl(text: string, index: number, pathRequired: boolean): SyntaxIssue | undefined {
  const schemeEnd = text.indexOf("://");
  const scheme = text.slice(0, schemeEnd);
  if (scheme !== "http" && scheme !== "https") {
    return { index, message: `unsupported scheme "${scheme}" (use http or https)` };
  }
  const authorityStart = schemeEnd + 3;
  const rest = text.slice(authorityStart);
  const authorityLength = rest.search(/[/?#]/);
  const authority = authorityLength < 0 ? rest : rest.slice(0, authorityLength);
  const at = authority.indexOf("@");
  if (at >= 0) return { index: index + authorityStart, message: "userinfo is not allowed in a URL rule" };
  if (authority.startsWith("[")) {
    return { index: index + authorityStart, message: "IPv6 literals are not supported" };
  }
  const colon = authority.indexOf(":");
  const host = colon < 0 ? authority : authority.slice(0, colon);
  if (!/^[0-9.]+$/.test(host)) {
    const hostIssue = diagnoseHost(host, index + authorityStart);
    if (hostIssue !== undefined) return hostIssue;
  }
  const query = text.indexOf("?");
  if (query >= 0) return { index: index + query, message: 'a URL rule cannot have a query ("?")' };
  const fragment = text.indexOf("#");
  if (fragment >= 0) return { index: index + fragment, message: 'a URL rule cannot have a fragment ("#")' };
  if (pathRequired && authorityLength < 0) {
    return { index: index + text.length, message: `URL rule needs a path (add "/")` };
  }
  return undefined;
}
