// Real-kernel tests of `egress sidecar` (sidecar.md §9): namespaces `pod` and `world` joined by a
// veth pair; the sidecar and an unprivileged app run in `pod`, a DNS/TCP/HTTP peer in `world`.
// Each test builds its own namespaces and removes them in finally.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import { type Schema, validate } from "../helpers/json_schema.ts";
import {
  api,
  EXTRA4,
  MOD,
  type SidecarHandle,
  sidecarTestsUnmet,
  startSidecar,
  Topology,
  WORLD4,
  WORLD6,
} from "./helpers.ts";

const SKIP = sidecarTestsUnmet();
const SCHEMA = JSON.parse(
  await Deno.readTextFile(new URL("../../src/log/schema.json", import.meta.url)),
) as Schema;
const OPTIONS = { sanitizeOps: false, sanitizeResources: false };

async function withTopology(fn: (t: Topology, started: SidecarHandle[]) => Promise<void>): Promise<void> {
  const t = await Topology.create();
  const started: SidecarHandle[] = [];
  try {
    await fn(t, started);
  } finally {
    for (const h of started) await h.stop().catch(() => {});
    await t.destroy();
    for (const path of temporaryFiles.splice(0)) await Deno.remove(path).catch(() => {});
  }
}

const temporaryFiles: string[] = [];

async function writeTemp(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "egress-sidecar-test-" });
  temporaryFiles.push(path);
  await Deno.writeTextFile(path, text);
  return path;
}

async function nftSet(t: Topology, name: string): Promise<string> {
  const r = await t.nft(["list", "set", "inet", "egress", name]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function egressLeft(t: Topology): Promise<string> {
  const ruleset = (await t.nft(["list", "ruleset"])).stdout;
  return /egress|redirect to :15053/.test(ruleset) ? ruleset : "";
}

testWhen(
  SKIP,
  "sidecar dns+nft: baseline, names, ports, IPv6, TTL timeouts, DoT, DoH, logs, cleanup",
  async () => {
    await withTopology(async (t, started) => {
      const doh = await writeTemp("# DoH servers\n198.19.0.20\nfd65:6772:1::20/128\n");
      const h = await startSidecar(t, ["--doh-blocklist", doh]);
      started.push(h);

      // Baseline: deny-all before any policy.
      assert.equal((await api(t, h, "GET", "/healthz", { token: null })).status, 200);
      assert.equal((await t.dig("allowed.test")).status, "NXDOMAIN");
      assert.equal(await t.connects(WORLD4, 80), false);
      assert.equal(await t.connects(WORLD6, 80), false);

      const policy =
        "allowed.test:80|853|8080\n*.allowed.test:8080\nlong.test:*\nmid.test:8080\ndoh.test:443|8080\n";
      const posted = await api(t, h, "POST", "/policy", { type: "text/plain", body: policy });
      assert.equal(posted.status, 200, posted.body);
      assert.equal(JSON.parse(posted.body).egress.length, 5);

      // Allowed name: resolves and connects on its ports only (IPv4 and IPv6).
      assert.deepEqual(await t.dig("allowed.test"), { status: "NOERROR", addresses: [WORLD4] });
      assert.equal(await t.connects(WORLD4, 80), true);
      assert.equal(await t.connects(WORLD4, 8080), true);
      assert.equal(await t.connects(WORLD4, 443), false);
      assert.deepEqual(await t.dig("allowed.test", "AAAA"), { status: "NOERROR", addresses: [WORLD6] });
      assert.equal(await t.connects(WORLD6, 80), true);
      assert.equal(await t.connects(WORLD6, 443), false);
      // DoT is dropped even to an allowed address and port.
      assert.equal(await t.connects(WORLD4, 853), false);

      // Denied name: NXDOMAIN; its address is not reachable directly either.
      assert.equal((await t.dig("denied.test")).status, "NXDOMAIN");
      assert.equal(await t.connects("198.19.0.13", 8080), false);
      // A resolver the app picks itself is redirected to the proxy: NXDOMAIN, not the peer's answer.
      assert.equal((await t.dig("denied.test", "A", EXTRA4[4])).status, "NXDOMAIN");
      // ... also over IPv6 and over TCP to a resolver of the app's choosing.
      assert.equal((await t.dig("denied.test", "A", WORLD6)).status, "NXDOMAIN");
      assert.equal((await t.dig("denied.test", "A", EXTRA4[4], true)).status, "NXDOMAIN");

      // The proxy's mark exempts nothing for the app. Without capabilities it cannot set SO_MARK;
      // with CAP_NET_RAW (enough for SO_MARK since Linux 5.17, and a container default) marked
      // packets are still filtered and its marked DNS queries still reach only the proxy.
      assert.equal(await t.probe(["somark"]), "errno 1");
      assert.equal(await t.probe(["somark"], ["net_raw"]), "ok");
      assert.equal(await t.probe(["marked-connect", "198.19.0.13", "8080"], ["net_raw"]), "failed");
      assert.equal(await t.probe(["marked-connect", WORLD4, "80"], ["net_raw"]), "connected"); // allowed
      assert.equal(await t.probe(["marked-dns", EXTRA4[4], "denied.test"], ["net_raw"]), "rcode 3");
      assert.equal(await t.probe(["marked-dns", WORLD4, "denied.test"], ["net_raw"]), "rcode 3");

      // DNS over TCP, and TTL clamping into the dynamic set timeouts.
      assert.deepEqual(await t.dig("mid.test", "A", WORLD4, true), {
        status: "NOERROR",
        addresses: ["198.19.0.12"],
      });
      assert.equal(await t.connects("198.19.0.12", 8080), true);
      assert.deepEqual((await t.dig("mid.test", "AAAA")).addresses, ["fd65:6772:1::11"]);
      assert.equal(await t.connects("fd65:6772:1::11", 8080), true);
      assert.equal((await t.dig("long.test")).status, "NOERROR");
      assert.equal(await t.connects("198.19.0.11", 8080), true);
      const port4 = await nftSet(t, "dyn4_port");
      assert.match(port4, /198\.18\.0\.2 \. tcp \. 80 timeout 1m /); // TTL 30 → 60 s
      assert.match(port4, /198\.19\.0\.12 \. tcp \. 8080 timeout 3m20s /); // TTL 200 kept
      assert.match(await nftSet(t, "dyn4_proto"), /198\.19\.0\.11 \. tcp timeout 6m /); // TTL 1000 → 360 s
      const port6 = await nftSet(t, "dyn6_port");
      assert.match(port6, /fd65:6772::2 \. tcp \. 80 timeout 1m /);
      assert.match(port6, /fd65:6772:1::11 \. tcp \. 8080 timeout 3m20s /);

      // DoH blocklist: 443 to listed addresses is dropped, other ports of the same name pass.
      assert.equal((await t.dig("doh.test")).status, "NOERROR");
      assert.equal(await t.connects("198.19.0.20", 443), false);
      assert.equal(await t.connects("198.19.0.20", 8080), true);
      assert.equal((await t.dig("doh.test", "AAAA")).status, "NOERROR");
      assert.equal(await t.connects("fd65:6772:1::20", 443), false);
      assert.equal(await t.connects("fd65:6772:1::20", 8080), true);

      const status = JSON.parse((await api(t, h, "GET", "/status")).body);
      assert.equal(status.mode, "sidecar");
      assert.equal(status.enforcement, "dns+nft");
      assert.equal(status.fallback_reason, null);
      assert.deepEqual(status.rules, { allow: 5, deny: 0 });
      assert.ok(status.dynamic_ips >= 7, JSON.stringify(status));
      assert.ok(status.counters.dns_queries >= 10, JSON.stringify(status));
      assert.ok(status.counters.dns_denied >= 3, JSON.stringify(status));
      assert.ok(status.counters.nft_dropped >= 6, JSON.stringify(status));
      assert.equal(status.counters.policy_updates, 1); // the startup policy is not an update

      // SIGTERM: exit 0, nothing of egress left.
      assert.equal(await h.stop(), 0);
      started.length = 0;
      assert.equal(await egressLeft(t), "");
      const lines = h.stdout().trim().split("\n").map((l) => JSON.parse(l));
      assert.ok(lines.length >= 10);
      for (const line of lines) assert.deepEqual(validate(SCHEMA, line), [], JSON.stringify(line));
      const denied = lines.find((l) => l.name === "denied.test");
      assert.equal(denied.type, "dns");
      assert.equal(denied.policy, "deny");
      assert.equal(denied.reason, "name not allowed");
      assert.equal(denied.dst_ip, WORLD4);
      assert.equal(denied.dst_port, 53);
      const allowed = lines.find((l) => l.name === "allowed.test" && l.policy === "allow");
      assert.deepEqual([allowed.rule, allowed.line], ["allowed.test:80|853|8080", 1]); // source line
      assert.match(h.stderr(), /INFO enforcement dns\+nft/);
      assert.match(h.stderr(), /cleanup: removed nftables table inet egress/);
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar policy changes: IPv6/IPv4 static sets, deny beats allow, removal, download survives, 4096 cap, API codes",
  async () => {
    await withTopology(async (t, started) => {
      const file = await writeTemp(JSON.stringify({
        defaultAction: "deny",
        egress: [{ target: "allowed.test", ports: [80] }, {
          target: "*.allowed.test",
          ports: [8080],
          protocol: "tcp",
        }],
      }));
      const h = await startSidecar(t, ["--policy-json", file]);
      started.push(h);
      const json = "application/json";

      // Static IPv6 and IPv4 entries work without DNS.
      assert.equal(await t.connects("fd65:6772:1::20", 8080), false);
      assert.equal(await t.connects("198.19.0.12", 8080), false);
      const patched = await api(t, h, "PATCH", "/policy", {
        type: json,
        body: JSON.stringify({
          egress: [{ target: "fd65:6772:1::20", ports: [8080], protocol: "tcp" }, {
            target: "198.19.0.12/32",
          }, { target: "fd65:6772:1::11/128" }],
        }),
      });
      assert.equal(patched.status, 200, patched.body);
      assert.equal(await t.connects("fd65:6772:1::20", 8080), true);
      assert.equal(await t.connects("fd65:6772:1::20", 443), false);
      assert.equal(await t.connects("198.19.0.12", 8080), true);
      assert.match(await nftSet(t, "allow6_port"), /fd65:6772:1::20 \. tcp \. 8080/);

      // ICMP (ping sockets, open to every user in Docker containers) is filtered like the rest: an
      // entry without ports and protocol admits it, others do not.
      await t.allowPingSockets();
      assert.equal(await t.probe(["ping", "198.19.0.12"]), "reply");
      assert.equal(await t.probe(["ping", "198.19.0.13"]), "blocked");
      assert.equal(await t.probe(["ping", "fd65:6772:1::11"]), "reply");
      // (ICMPv6 ping sockets do not report the OUTPUT drop to the sender: no reply instead)
      assert.equal(await t.probe(["ping", "fd65:6772:1::20"]), "timeout");

      // Deny beats allow: an address deny wins over the name allow, a name deny gives NXDOMAIN.
      assert.deepEqual((await t.dig("other.allowed.test")).addresses, ["198.19.0.30"]);
      assert.equal(await t.connects("198.19.0.30", 8080), true);
      await api(t, h, "PATCH", "/policy", {
        type: json,
        body: '{"egress":[{"action":"deny","target":"198.19.0.30"}]}',
      });
      assert.equal(await t.connects("198.19.0.30", 8080), false);
      assert.equal((await t.dig("other.allowed.test")).status, "NOERROR");
      await api(t, h, "PATCH", "/policy", {
        type: json,
        body: '{"egress":[{"action":"deny","target":"other.allowed.test"}]}',
      });
      assert.equal((await t.dig("other.allowed.test")).status, "NXDOMAIN");
      const byRule = h.stdout().trim().split("\n").map((l) => JSON.parse(l)).findLast((l) =>
        l.name === "other.allowed.test"
      );
      assert.deepEqual([byRule.policy, byRule.reason, byRule.rule], [
        "deny",
        "rule matched",
        "other.allowed.test",
      ]);

      // Policy replaced while a download runs: the download completes; the name's entries go.
      assert.deepEqual((await t.dig("allowed.test")).addresses, [WORLD4]);
      const download = t.app([
        "curl",
        "-s",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        `http://${WORLD4}/download?chunks=25&ms=100`,
      ]);
      await new Promise((r) => setTimeout(r, 600));
      const replaced = await api(t, h, "POST", "/policy", {
        type: "text/plain",
        body: "mid.test:8080\n",
      });
      assert.equal(replaced.status, 200, replaced.body);
      assert.doesNotMatch(await nftSet(t, "dyn4_port"), /198\.18\.0\.2/);
      assert.equal(await t.connects(WORLD4, 80), false);
      const finished = await download;
      assert.equal(finished.code, 0, finished.stderr);
      assert.equal(finished.stdout, String(25 * 1024));

      // API status codes over HTTP.
      const before = (await api(t, h, "GET", "/policy")).body;
      assert.equal((await api(t, h, "GET", "/policy", { token: null })).status, 401);
      assert.equal((await api(t, h, "GET", "/status", { token: "nope" })).status, 401);
      assert.equal((await api(t, h, "PUT", "/policy", { type: "text/plain", body: "a.com" })).status, 405);
      assert.equal((await api(t, h, "POST", "/policy", { type: "text/html", body: "a.com" })).status, 415);
      assert.equal(
        (await api(t, h, "POST", "/policy", { type: "text/plain", body: "a.com\n".repeat(200_000) })).status,
        413,
      );
      const bad = await api(t, h, "POST", "/policy", {
        type: "text/plain",
        body: "ok.test\n  bad.test:99999\n",
      });
      assert.equal(bad.status, 400);
      assert.deepEqual(
        JSON.parse(bad.body).errors.map((e: { line: number; column: number }) => [e.line, e.column]),
        [[2, 12]],
      );
      const badJson = await api(t, h, "POST", "/policy", {
        type: json,
        body: '{"egress":[{"target":"a.test"},{"target":"*"}]}',
      });
      assert.equal(badJson.status, 400);
      assert.deepEqual([JSON.parse(badJson.body).errors[0].line, JSON.parse(badJson.body).errors[0].column], [
        2,
        0,
      ]);
      assert.equal((await api(t, h, "DELETE", "/policy")).status, 400);
      const entries = (n: number) =>
        Array.from({ length: n }, (_, i) => ({ target: `198.20.${i >> 7}.${(i & 127) * 2}` }));
      const over = await api(t, h, "POST", "/policy", {
        type: json,
        body: JSON.stringify({ egress: entries(4097) }),
      });
      assert.equal(over.status, 400);
      assert.equal(JSON.parse(over.body).errors[0].message, "at most 4096 rules");
      assert.equal((await api(t, h, "GET", "/policy")).body, before); // rejected requests changed nothing
      assert.equal((await t.dig("mid.test")).status, "NOERROR");

      const full = await api(t, h, "POST", "/policy", {
        type: json,
        body: JSON.stringify({ egress: entries(4096) }),
      });
      assert.equal(full.status, 200);
      const allow4 = await nftSet(t, "allow4_addr");
      assert.match(allow4, /198\.20\.31\.254/);
      assert.equal((allow4.match(/198\.20\./g) ?? []).length, 4096);
      assert.equal(JSON.parse((await api(t, h, "GET", "/status")).body).rules.allow, 4096);

      // PATCH replaces the entry with the same target; DELETE by query and by body; empty POST resets.
      await api(t, h, "POST", "/policy", { type: "text/plain", body: "mid.test:8080\nallowed.test:80\n" });
      const replacedEntry = await api(t, h, "PATCH", "/policy", {
        type: "text/plain",
        body: "mid.test:9000/udp\n",
      });
      assert.deepEqual(JSON.parse(replacedEntry.body).egress.at(-1), {
        action: "allow",
        target: "mid.test",
        ports: [9000],
        protocol: "udp",
      });
      assert.equal(JSON.parse(replacedEntry.body).egress.length, 2);
      const afterDelete = await api(t, h, "DELETE", "/policy?target=mid.test");
      assert.deepEqual(JSON.parse(afterDelete.body).egress.map((e: { target: string }) => e.target), [
        "allowed.test",
      ]);
      assert.equal((await t.dig("mid.test")).status, "NXDOMAIN");
      await api(t, h, "DELETE", "/policy", { type: json, body: '{"targets":["allowed.test"]}' });
      assert.equal((await t.dig("allowed.test")).status, "NXDOMAIN");
      await api(t, h, "PATCH", "/policy", { type: "text/plain", body: "allowed.test:80\n" });
      assert.equal((await t.dig("allowed.test")).status, "NOERROR");
      // defaultAction allow: unlisted destinations pass; denied names still get NXDOMAIN.
      const open = await api(t, h, "POST", "/policy", {
        type: json,
        body: '{"defaultAction":"allow","egress":[{"action":"deny","target":"denied.test"}]}',
      });
      assert.equal(open.status, 200, open.body);
      assert.equal(await t.connects("198.19.0.13", 8080), true);
      assert.equal((await t.dig("denied.test")).status, "NXDOMAIN");
      assert.equal((await t.dig("mid.test")).status, "NOERROR");
      const reset = await api(t, h, "POST", "/policy", { type: json, body: "" });
      assert.deepEqual(JSON.parse(reset.body), { defaultAction: "deny", egress: [] });
      assert.equal((await t.dig("allowed.test")).status, "NXDOMAIN");
      assert.equal(await t.connects(WORLD4, 80), false);
      assert.equal(await t.connects("198.19.0.13", 8080), false);
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar --mode dns: names filtered, direct IPs reachable (the documented limit), 403 without token",
  async () => {
    await withTopology(async (t, started) => {
      const h = await startSidecar(t, ["--mode", "dns"], {
        env: { EGRESS_POLICY: "allowed.test:80\n" },
        token: null,
      });
      started.push(h);
      assert.deepEqual((await t.dig("allowed.test")).addresses, [WORLD4]);
      assert.equal((await t.dig("denied.test")).status, "NXDOMAIN");
      assert.equal((await t.dig("denied.test", "A", EXTRA4[4])).status, "NXDOMAIN");
      assert.equal(await t.connects("198.19.0.13", 8080), true);
      assert.equal((await api(t, h, "GET", "/status")).status, 403);
      assert.equal((await api(t, h, "GET", "/policy")).status, 403);
      assert.equal((await api(t, h, "GET", "/healthz", { token: null })).status, 200);
      const healthcheck = [
        Deno.execPath(),
        "run",
        "-A",
        MOD,
        "sidecar",
        "--healthcheck",
        "--api",
        "127.0.0.1:18080",
      ];
      assert.equal((await t.inPod(healthcheck, { DENO_NO_UPDATE_CHECK: "1" })).code, 0);
      const table = (await t.nft(["list", "table", "inet", "egress"])).stdout;
      assert.match(table, /chain dns_redirect/);
      assert.doesNotMatch(table, /chain output/);
      assert.equal(await h.stop(), 0);
      started.length = 0;
      assert.equal(await egressLeft(t), "");
      assert.equal((await t.inPod(healthcheck, { DENO_NO_UPDATE_CHECK: "1" })).code, 1);
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar fallback: --nft /nonexistent runs at level dns with the reason; --require-nft exits 1",
  async () => {
    await withTopology(async (t, started) => {
      const h = await startSidecar(t, ["--nft", "/nonexistent"], {
        env: { EGRESS_POLICY: "allowed.test:80\n" },
      });
      started.push(h);
      const status = JSON.parse((await api(t, h, "GET", "/status")).body);
      assert.equal(status.enforcement, "dns");
      assert.match(status.fallback_reason, /\/nonexistent/);
      assert.match(h.stderr(), /WARN enforcement dns: .*\/nonexistent/);
      // DNS is still redirected (iptables), direct IPs are not blocked at this level.
      assert.equal((await t.dig("denied.test", "A", EXTRA4[4])).status, "NXDOMAIN");
      assert.deepEqual((await t.dig("allowed.test")).addresses, [WORLD4]);
      assert.equal(await t.connects("198.19.0.13", 8080), true);
      assert.match((await t.inPod(["iptables", "-t", "nat", "-S", "OUTPUT"])).stdout, /egress-sidecar-dns/);
      assert.equal(await h.stop(), 0);
      started.length = 0;
      assert.doesNotMatch(
        (await t.inPod(["iptables", "-t", "nat", "-S", "OUTPUT"])).stdout,
        /egress-sidecar-dns/,
      );
      assert.doesNotMatch(
        (await t.inPod(["ip6tables", "-t", "nat", "-S", "OUTPUT"])).stdout,
        /egress-sidecar-dns/,
      );
      assert.equal((await t.dig("denied.test")).status, "NOERROR"); // the redirect is gone

      const strict = await startSidecar(t, ["--nft", "/nonexistent", "--require-nft"], { waitReady: false });
      const code = await strict.process.status;
      await strict.stop();
      assert.equal(code.code, 1);
      assert.match(strict.stderr(), /Cannot install nftables enforcement: .*\/nonexistent/);
      assert.doesNotMatch(strict.stderr(), /at |stack/i);
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar refuses the host network (EGRESS_POD_IP = EGRESS_HOST_IP) before touching anything, unless told",
  async () => {
    await withTopology(async (t, started) => {
      const h = await startSidecar(t, [], {
        env: { EGRESS_POD_IP: "192.0.2.10", EGRESS_HOST_IP: "192.0.2.10" },
        waitReady: false,
      });
      const status = await h.process.status;
      await h.stop();
      assert.equal(status.code, 1);
      assert.match(h.stderr(), /refusing to run in the host network namespace/);
      assert.equal(await egressLeft(t), "");
      // told explicitly (e.g. a VM sandbox whose interface is device-backed): it runs, with a warning
      const forced = await startSidecar(t, ["--allow-host-network"], {
        env: { EGRESS_POD_IP: "192.0.2.10", EGRESS_HOST_IP: "192.0.2.10" },
      });
      started.push(forced);
      assert.match(forced.stderr(), /WARN host network check overridden by --allow-host-network/);
      assert.equal(await t.connects(WORLD4, 80), false);
      assert.equal(await forced.stop(), 0);
      started.length = 0;
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar exit on an error (API port held by the app) leaves deny-all in place; the next start replaces it",
  async () => {
    await withTopology(async (t, started) => {
      // The app grabs the sidecar's (unprivileged) API port, e.g. while the sidecar restarts.
      const squatter = t.spawnApp([
        "/usr/bin/python3",
        "-c",
        "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',18080))\ns.listen()\n" +
        "print('bound',flush=True)\ntime.sleep(60)",
      ]);
      try {
        const reader = squatter.stdout.pipeThrough(new TextDecoderStream()).getReader();
        assert.match((await reader.read()).value ?? "", /bound/);
        reader.releaseLock();
        const failed = await startSidecar(t, [], {
          env: { EGRESS_POLICY: "allowed.test:80\n" },
          waitReady: false,
        });
        const code = (await failed.process.status).code;
        await failed.stop();
        assert.equal(code, 1, failed.stderr());
        assert.match(failed.stderr(), /Cannot start the API on 127\.0\.0\.1:18080/);
        assert.match(failed.stderr(), /WARN enforcement left in place/);
        const table = await t.nft(["list", "chain", "inet", "egress", "output"]);
        assert.equal(table.code, 0, table.stderr);
        assert.match(table.stdout, /policy drop;/);
        assert.equal(await t.connects(WORLD4, 80), false);
        assert.notEqual((await t.dig("allowed.test")).status, "NOERROR");
      } finally {
        squatter.kill("SIGKILL");
        await squatter.status;
        await squatter.stdout.cancel().catch(() => {});
      }
      const h = await startSidecar(t, [], { env: { EGRESS_POLICY: "allowed.test:80\n" } });
      started.push(h);
      assert.deepEqual((await t.dig("allowed.test")).addresses, [WORLD4]);
      assert.equal(await t.connects(WORLD4, 80), true);
      assert.equal(await h.stop(), 0);
      started.length = 0;
      assert.equal(await egressLeft(t), "");
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar startup: UDP flows opened before it are judged again (conntrack flushed); IPv6 link-local filtered",
  async () => {
    await withTopology(async (t, started) => {
      // Before the sidecar: the app talks to a resolver of its choice and to a UDP echo, from fixed
      // source ports, and pings the world's link-local address.
      // Docker's embedded DNS puts NAT rules into the container's namespace (Istio's init container
      // too), so conntrack tracks flows there before the sidecar starts; a bare namespace would not.
      await t.addDockerDnsNat();
      await t.allowPingSockets();
      const linkLocal = await t.worldLinkLocal();
      assert.equal(await t.probe(["ping", linkLocal]), "reply");
      assert.equal((await t.dig("denied.test", "A", EXTRA4[4], false, 40053)).status, "NOERROR");
      assert.equal(await t.probe(["udp-echo", WORLD4, "9000", "40090"]), "reply");

      const h = await startSidecar(t, []);
      started.push(h);
      // The same 5-tuples again: without the flush they are established (and port 53 skips the
      // redirect); now the query reaches the proxy and the datagram is dropped.
      assert.equal((await t.dig("denied.test", "A", EXTRA4[4], false, 40053)).status, "NXDOMAIN");
      assert.equal(await t.probe(["udp-echo", WORLD4, "9000", "40090"]), "blocked");
      // Link-local peers (the node, other pods on the segment) are filtered like any address.
      assert.equal(await t.probe(["ping", linkLocal]), "timeout");
      assert.match(h.stderr(), /conntrack flushed/);

      assert.equal(await h.stop(), 0);
      started.length = 0;
      assert.equal(await t.probe(["ping", linkLocal]), "reply");
    });
  },
  OPTIONS,
);

testWhen(
  SKIP,
  "sidecar: the app cannot forge the upstream's answer (IP_FREEBIND, loopback, every query id)",
  async () => {
    await withTopology(async (t, started) => {
      // Docker lets container users bind ports below 1024; IP_FREEBIND needs no privilege at all.
      await t.podSysctl("net.ipv4.ip_unprivileged_port_start", "0");
      // 1. A remote upstream (here one that never answers, so the forger always comes first): its
      // address is not local, so sending from it needs IP_TRANSPARENT, i.e. CAP_NET_RAW.
      const remote = await startSidecar(t, [], {
        env: { EGRESS_POLICY: "allowed.test:80\n" },
        upstream: "198.19.0.99",
      });
      started.push(remote);
      const forge = ["forge-upstream", "198.19.0.99", "53", "allowed.test", "198.19.0.13"];
      assert.equal(await t.probe(forge, ["net_raw"]), "blocked");
      assert.equal(await t.probe(forge), "unroutable");
      assert.equal(await t.connects("198.19.0.13", 80), false);
      assert.doesNotMatch(await nftSet(t, "dyn4_port"), /198\.19\.0\.13/);
      assert.equal(await remote.stop(), 0);
      started.length = 0;

      // 2. A loopback upstream behind Docker's DNAT (127.0.0.11:53 → a private port): the app can
      // bind 127.0.0.11:53 itself, since the real resolver listens elsewhere. The forged flow clashes
      // with the proxy's own in conntrack and is dropped; the query ends in SERVFAIL (5 s timeout).
      await t.addDockerDnsNat();
      const local = await startSidecar(t, [], {
        env: { EGRESS_POLICY: "allowed.test:80\n" },
        upstream: "127.0.0.11",
      });
      started.push(local);
      assert.equal(
        await t.probe(["forge-upstream", "127.0.0.11", "53", "allowed.test", "198.19.0.13"]),
        "rcode 2",
      );
      assert.equal(await t.connects("198.19.0.13", 80), false);
      assert.doesNotMatch(await nftSet(t, "dyn4_port"), /198\.19\.0\.13/);
    });
  },
  OPTIONS,
);
