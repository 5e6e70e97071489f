// Sidecar benchmark (root; throw-away namespaces `pod` and `world`, nothing in the root namespace):
//  1. added DNS latency: the same queries straight to the test resolver vs through the sidecar
//     (allowed names, which wait for the nft set update, and denied names answered locally);
//  2. policy-update latency: API POST → rule active in nftables, at 10 and 4,096 rules.
// Ratios and baselines come from the same run. Bounded: fixed query counts, per-query timeouts.
// Run: DENO_NO_UPDATE_CHECK=1 deno run -A scripts/bench/sidecar.ts
import * as dgram from "node:dgram";
import type { Buffer } from "node:buffer";
import type { Topology as TopologyType } from "../../tests/sidecar/helpers.ts";
import dnsPacket from "dns-packet";

const QUERIES = 150;
const UPDATES = 5;

function stats(ms: number[]): { median: number; p95: number; mean: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { median: at(0.5), p95: at(0.95), mean: ms.reduce((a, b) => a + b, 0) / ms.length };
}

const fmt = (n: number) => n.toFixed(3).padStart(8);

// ---------------------------------------------------------------- client side (inside `pod`)

async function dnsClient(server: string, names: string[], count: number): Promise<number[]> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, r));
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      // "{i}" makes every query a fresh name (no cached entry: always an nft update).
      const name = names[i % names.length].replace("{i}", String(i));
      const id = (i * 7919) & 0xffff;
      const query = dnsPacket.encode({
        type: "query",
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: "A", name }],
      });
      const start = performance.now();
      const got = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          socket.off("message", onMessage);
          resolve(false);
        }, 2000);
        const onMessage = (message: Buffer) => {
          if (message.readUInt16BE(0) !== id) return;
          clearTimeout(timer);
          socket.off("message", onMessage);
          resolve(true);
        };
        socket.on("message", onMessage);
        socket.send(query, 53, server);
      });
      if (got) times.push(performance.now() - start);
    }
  } finally {
    socket.close();
  }
  return times;
}

async function updateClient(token: string, rules: number, rounds: number): Promise<number[]> {
  const times: number[] = [];
  for (let round = 0; round < rounds; round++) {
    // A fresh address set each round so every update changes the table.
    const egress = Array.from(
      { length: rules },
      (_, i) => ({ target: `198.${20 + (round % 2)}.${i >> 7}.${(i & 127) * 2}` }),
    );
    const body = JSON.stringify({ egress });
    const marker = egress[egress.length - 1].target;
    const start = performance.now();
    const response = await fetch("http://127.0.0.1:18080/policy", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body,
    });
    await response.body?.cancel();
    if (response.status !== 200) throw new Error(`POST /policy answered ${response.status}`);
    // "active in nft": the set holds the last element of the new policy.
    const listed = await new Deno.Command("nft", {
      args: ["list", "set", "inet", "egress", "allow4_addr"],
      stdout: "piped",
    }).output();
    const elapsed = performance.now() - start;
    if (!new TextDecoder().decode(listed.stdout).includes(marker)) {
      throw new Error(`rule ${marker} not active after POST`);
    }
    times.push(elapsed);
  }
  return times;
}

if (Deno.args[0] === "--client") {
  const [, kind, ...rest] = Deno.args;
  const result = kind === "dns"
    ? await dnsClient(rest[0], rest[1].split(","), Number(rest[2]))
    : await updateClient(rest[0], Number(rest[1]), Number(rest[2]));
  console.log(JSON.stringify(result));
  Deno.exit(0);
}

// ---------------------------------------------------------------- driver

const { Topology, startSidecar, WORLD4, sidecarTestsUnmet } = await import("../../tests/sidecar/helpers.ts");
const unmet = sidecarTestsUnmet();
if (unmet) {
  console.log(`sidecar bench skipped: ${unmet}`);
  Deno.exit(0);
}

const SELF = new URL(import.meta.url).pathname;

async function client(t: TopologyType, args: string[]): Promise<number[]> {
  const r = await t.inPod([Deno.execPath(), "run", "-A", SELF, "--client", ...args], {
    DENO_NO_UPDATE_CHECK: "1",
  });
  if (r.code !== 0) throw new Error(`bench client failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

const t = await Topology.create();
const deadline = setTimeout(() => {
  console.error("sidecar bench: time limit (120 s) reached");
  Deno.exit(1);
}, 120_000);
try {
  const allowed = ["allowed.test", "mid.test", "long.test"];
  const direct = stats(await client(t, ["dns", WORLD4, allowed.join(","), String(QUERIES)]));
  const h = await startSidecar(t, [], {
    env: { EGRESS_POLICY: "allowed.test:80\nmid.test:8080\nlong.test:*\n*.bench.test:80\n" },
  });
  try {
    const viaFresh = stats(await client(t, ["dns", WORLD4, "q{i}.bench.test", String(QUERIES)]));
    const viaAllowed = stats(await client(t, ["dns", WORLD4, allowed.join(","), String(QUERIES)]));
    const viaDenied = stats(await client(t, ["dns", WORLD4, "denied.test", String(QUERIES)]));
    console.log(
      `DNS latency, ${QUERIES} sequential UDP queries from the pod (ms)      median      p95     mean`,
    );
    console.log(
      `  direct to the resolver (baseline)                       ${fmt(direct.median)} ${fmt(direct.p95)} ${
        fmt(direct.mean)
      }`,
    );
    console.log(
      `  via sidecar, allowed, fresh name (forward + nft update) ${fmt(viaFresh.median)} ${
        fmt(viaFresh.p95)
      } ${fmt(viaFresh.mean)}`,
    );
    console.log(
      `  via sidecar, allowed, repeated names (forward)          ${fmt(viaAllowed.median)} ${
        fmt(viaAllowed.p95)
      } ${fmt(viaAllowed.mean)}`,
    );
    console.log(
      `  via sidecar, denied (local NXDOMAIN)                    ${fmt(viaDenied.median)} ${
        fmt(viaDenied.p95)
      } ${fmt(viaDenied.mean)}`,
    );
    console.log(
      `  added latency, fresh name: +${(viaFresh.median - direct.median).toFixed(3)} ms median (x${
        (viaFresh.median / direct.median).toFixed(1)
      })`,
    );
    console.log(
      `  added latency, repeated:   +${(viaAllowed.median - direct.median).toFixed(3)} ms median (x${
        (viaAllowed.median / direct.median).toFixed(1)
      })`,
    );

    console.log(
      `Policy update, API POST -> rule active in nft (${UPDATES} rounds, ms)        median      p95     mean`,
    );
    const results: Record<number, ReturnType<typeof stats>> = {};
    for (const rules of [10, 4096]) {
      results[rules] = stats(await client(t, ["update", h.token, String(rules), String(UPDATES)]));
      const s = results[rules];
      console.log(
        `  ${String(rules).padStart(5)} rules                                             ${fmt(s.median)} ${
          fmt(s.p95)
        } ${fmt(s.mean)}`,
      );
    }
    console.log(`  4096 vs 10 rules: x${(results[4096].median / results[10].median).toFixed(1)}`);
  } finally {
    await h.stop();
  }
} finally {
  clearTimeout(deadline);
  await t.destroy();
}
