// Policy decision benchmark: decisions per second for policies of 10, 1,000 and 10,000 rules over a
// realistic event mix, plus parse time per 1,000 policy lines. `deno task bench`. Bounded (~15 s).
//
// The policies are generated as TEXT and parsed with parsePolicy, so the benchmark measures exactly
// what `egress start` runs. Each size gets its own events: half aimed at random rules of that policy
// (hits, wherever the rule sits in the list), half unrelated (misses), across all event kinds.
import { parsePolicy } from "../../src/policy/policy.ts";
import { DnsCache } from "../../src/policy/dns_cache.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import type { ConnectionEvent } from "../../src/policy/types.ts";

const SIZES = [10, 1_000, 10_000];
const ROUNDS = 5;
const ROUND_MS = 300;

/** Deterministic PRNG (mulberry32) so that runs are comparable. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Target =
  | { kind: "host"; name: string }
  | { kind: "wildcard"; base: string }
  | { kind: "ip"; ip: string; port: number }
  | { kind: "cidr"; prefix: string; port: number }
  | { kind: "udp"; ip: string; port: number }
  | { kind: "url"; host: string; path: string; method: string }
  | { kind: "dns"; name: string };

/** Policy text with `count` rules (headers and comments are extra lines) and what each rule admits. */
function generatePolicy(
  count: number,
  random: () => number,
): { text: string; targets: Target[]; lines: number } {
  const lines: string[] = ["# generated benchmark policy", "127.0.0.53:53/udp", "8.8.8.8:53/udp"];
  const targets: Target[] = [{ kind: "udp", ip: "127.0.0.53", port: 53 }, {
    kind: "udp",
    ip: "8.8.8.8",
    port: 53,
  }];
  const int = (n: number) => Math.floor(random() * n);
  for (let i = 0; targets.length < count; i++) {
    const roll = random();
    if (roll < 0.3) {
      const name = `svc${i}.example${i % 97}.com`;
      lines.push(i % 5 === 0 ? `${name}:443|8443 exe=*/node` : name);
      targets.push({ kind: "host", name });
    } else if (roll < 0.42) {
      const base = `team${i}.corp${i % 13}.com`;
      lines.push(`*.${base}`);
      targets.push({ kind: "wildcard", base });
    } else if (roll < 0.47) {
      lines.push(`cdn${i}-*.edge${i % 7}.net`);
      targets.push({ kind: "host", name: `cdn${i}-eu.edge${i % 7}.net` });
    } else if (roll < 0.57) {
      const ip = `10.${int(256)}.${int(256)}.${1 + int(254)}`;
      const port = [22, 5432, 6379][i % 3];
      lines.push(`${ip}:${port}`);
      targets.push({ kind: "ip", ip, port });
    } else if (roll < 0.64) {
      const len = [16, 20, 24][i % 3];
      const prefix = `172.${16 + int(16)}.${int(256)}`;
      lines.push(`${prefix}.0/${len}:*`);
      targets.push({ kind: "cidr", prefix, port: 443 });
    } else if (roll < 0.67) {
      const ip = `192.168.${int(256)}.${1 + int(254)}`;
      lines.push(`${ip}:123/udp`);
      targets.push({ kind: "udp", ip, port: 123 });
    } else if (roll < 0.87) {
      // Many URL rules share a few API hosts, as real policies do.
      const host = i % 4 === 0 ? "api.github.com" : `api${i}.svc${i % 31}.io`;
      const path = `/repos/org${i}/repo${i % 17}`;
      const method = i % 3 === 0 ? "POST" : "GET";
      lines.push(`${method === "POST" ? "GET|POST " : ""}https://${host}${path}/*`);
      targets.push({ kind: "url", host, path: `${path}/contents/x`, method });
    } else if (roll < 0.95) {
      lines.push(`[https://pkg${i}.registry${i % 11}.org/v1]`);
      lines.push(`/packages/*`);
      lines.push(`[]`);
      targets.push({
        kind: "url",
        host: `pkg${i}.registry${i % 11}.org`,
        path: "/v1/packages/a/b",
        method: "GET",
      });
    } else {
      const name = `resolve${i}.names${i % 19}.com`;
      lines.push(`dns:${name}`);
      targets.push({ kind: "dns", name });
    }
  }
  return { text: lines.join("\n") + "\n", targets, lines: lines.length };
}

function eventFor(target: Target, random: () => number): ConnectionEvent {
  switch (target.kind) {
    case "host":
      return { type: "https", dst_ip: "203.0.113.7", dst_port: 443, host: target.name, exe: "/usr/bin/node" };
    case "wildcard":
      return {
        type: "https",
        dst_ip: "203.0.113.8",
        dst_port: 443,
        host: `a${Math.floor(random() * 9)}.${target.base}`,
      };
    case "ip":
      return { type: "tcp", dst_ip: target.ip, dst_port: target.port };
    case "cidr":
      return {
        type: "tcp",
        dst_ip: `${target.prefix}.${1 + Math.floor(random() * 254)}`,
        dst_port: target.port,
      };
    case "udp":
      return { type: "udp", dst_ip: target.ip, dst_port: target.port };
    case "url":
      return {
        type: "https",
        dst_ip: "203.0.113.9",
        dst_port: 443,
        host: target.host,
        url: `https://${target.host}${target.path}?ref=main`,
        method: target.method,
      };
    case "dns":
      return { type: "dns", dst_ip: "127.0.0.53", dst_port: 53, name: target.name };
  }
}

function missEvent(i: number): ConnectionEvent {
  switch (i % 6) {
    case 0:
      return {
        type: "https",
        dst_ip: "198.51.100.1",
        dst_port: 443,
        host: `unknown${i}.example${i % 97}.com`,
      };
    case 1:
      return {
        type: "https",
        dst_ip: "198.51.100.2",
        dst_port: 443,
        url: `https://api.github.com/repos/other${i}/x`,
        method: "GET",
      };
    case 2:
      return { type: "tcp", dst_ip: `10.${i % 256}.0.${1 + (i % 250)}`, dst_port: 3306 };
    case 3:
      return { type: "udp", dst_ip: "192.0.2.1", dst_port: 5353 };
    case 4:
      return { type: "dns", dst_ip: "127.0.0.53", dst_port: 53, name: `tracker${i}.ads.com` };
    default:
      return {
        type: "http",
        dst_ip: "198.51.100.3",
        dst_port: 80,
        url: `http://plain${i}.org/`,
        method: "GET",
      };
  }
}

type Setup = { size: number; enforcer: Enforcer; events: ConnectionEvent[]; expectedHits: number };

function setup(size: number): Setup {
  const random = prng(size);
  const { text, targets } = generatePolicy(size, random);
  const policy = parsePolicy(text);
  if (policy.rules.length !== size) {
    throw new Error(`Cannot build the benchmark: ${policy.rules.length} rules, wanted ${size}`);
  }
  const cache = new DnsCache();
  const enforcer = new Enforcer(policy, { dnsCache: cache, corroborate: true });
  const events: ConnectionEvent[] = [];
  for (let i = 0; i < 2000; i++) {
    if (i % 2 === 0) {
      const target = targets[Math.floor(random() * targets.length)];
      events.push(eventFor(target, random));
      // Some raw TCP connections are reached by name, via the DNS cache.
      if (target.kind === "host" && i % 6 === 0) {
        enforcer.recordDnsResponse(target.name, ["203.0.113.7"], 300);
      }
    } else {
      events.push(missEvent(i));
    }
  }
  const hits = events.filter((event) => enforcer.decide(event, { mitm: true }).allowed).length;
  // Every aimed event must be allowed and every unrelated one denied, or the numbers mean nothing.
  if (hits !== events.length / 2) {
    throw new Error(`Cannot trust the benchmark: ${hits} of ${events.length} allowed, wanted half`);
  }
  return { size, enforcer, events, expectedHits: hits };
}

function runRound(s: Setup): number {
  const deadline = performance.now() + ROUND_MS;
  let decisions = 0;
  let allowed = 0;
  const start = performance.now();
  while (performance.now() < deadline) {
    for (const event of s.events) if (s.enforcer.decide(event, { mitm: true }).allowed) allowed++;
    decisions += s.events.length;
  }
  const elapsed = performance.now() - start;
  if (allowed !== s.expectedHits * (decisions / s.events.length)) {
    throw new Error("Cannot trust the benchmark: verdicts changed");
  }
  return decisions / (elapsed / 1000);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function parseTimePer1000Lines(): { msPer1000: number; lines: number } {
  const { text, lines } = generatePolicy(10_000, prng(42));
  parsePolicy(text); // warm-up
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    parsePolicy(text);
    times.push(performance.now() - start);
  }
  return { msPer1000: (Math.min(...times) / lines) * 1000, lines };
}

const started = performance.now();
const setups = SIZES.map(setup);
for (const s of setups) runRound(s); // warm-up (JIT)
const rates = new Map<number, number[]>(SIZES.map((size) => [size, []]));
for (let round = 0; round < ROUNDS; round++) {
  for (const s of setups) rates.get(s.size)!.push(runRound(s));
}
const parse = parseTimePer1000Lines();

console.log("egress policy benchmark (Enforcer.decide, corroborate on, mitm on; median of 5 rounds)");
console.log("");
console.log("| rules  | events | allowed | decisions/s | µs/decision |");
console.log("|-------:|-------:|--------:|------------:|------------:|");
for (const s of setups) {
  const rate = median(rates.get(s.size)!);
  console.log(
    `| ${String(s.size).padStart(6)} | ${String(s.events.length).padStart(6)} | ${
      String(s.expectedHits).padStart(7)
    } | ${Math.round(rate).toLocaleString("en-US").padStart(11)} | ${(1e6 / rate).toFixed(2).padStart(11)} |`,
  );
}
const ratio = median(rates.get(10)!) / median(rates.get(10_000)!);
console.log("");
console.log(
  `cost ratio 10,000 rules / 10 rules: ${ratio.toFixed(2)} (goal ≤ 3) ${ratio <= 3 ? "OK" : "MISSED"}`,
);
console.log(
  `parse: ${parse.msPer1000.toFixed(2)} ms per 1,000 lines (${parse.lines} lines of generated policy)`,
);
console.log(`total run time: ${((performance.now() - started) / 1000).toFixed(1)} s`);
