// Real-kernel attribution: clients (curl, python3, node, dig) run as nobody in a test cgroup inside a
// test netns; the egress instance (a child process, as a daemon) must name exactly their pid and
// the original destination. TCP goes to an address that iptables (inside the test netns only)
// REDIRECTs to a local listener.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import type { CgroupPath } from "../../src/kernel/cgroup.ts";
import {
  addTestAddresses,
  client,
  InstanceChild,
  kernelTestsUnmet,
  RUN,
  TestNetns,
  withCgroup,
} from "./kernel_helpers.ts";
import { curl, node, python, Server } from "./clients.ts";

const reason = kernelTestsUnmet(["/usr/bin/curl", "/usr/bin/node", "/usr/bin/dig"]);

const CLIENT_IP = "192.0.2.1";
const REDIRECTED_IP = "192.0.2.10";
const UDP_IP = "192.0.2.20";
const LISTEN_PORT = 18080;

/** A test netns: 192.0.2.1/24 on a veth pair inside it, TCP to 192.0.2.10:80 REDIRECTed to a local server. */
async function withNetns<T>(name: string, fn: (netns: TestNetns, server: Server) => Promise<T>): Promise<T> {
  const netns = await TestNetns.create(`${RUN}-${name}`);
  let server: Server | undefined;
  try {
    await addTestAddresses(netns);
    await netns.exec([
      "iptables",
      "-t",
      "nat",
      "-A",
      "OUTPUT",
      "-p",
      "tcp",
      "-d",
      REDIRECTED_IP,
      "--dport",
      "80",
      "-j",
      "REDIRECT",
      "--to-ports",
      String(LISTEN_PORT),
    ]);
    server = await Server.start(netns, `/tmp/${netns.name}-accepts.jsonl`, [`0.0.0.0:${LISTEN_PORT}`]);
    return await fn(netns, server);
  } finally {
    await server?.stop();
    await netns.remove();
  }
}

function cgroupId(cgroup: CgroupPath): string {
  return String(Deno.statSync(cgroup.fsPath).ino);
}

interface Found {
  pid: number;
  uid: number;
  comm: string;
  cgroupId: string;
  dst_ip: string;
  dst_port: number;
}

async function packet(
  instance: InstanceChild,
  protocol: "tcp" | "udp",
  srcIp: string,
  srcPort: number,
  dstIp: string,
  dstPort: number,
): Promise<Found | null> {
  const reply = await instance.request({ op: "packet", protocol, srcIp, srcPort, dstIp, dstPort });
  return reply.result as Found | null;
}

function assertFound(
  found: Found | null,
  expected: { pid: number; comm: string; cgroup: CgroupPath; dst: [string, number] },
) {
  assert.ok(found, `no entry for pid ${expected.pid}`);
  assert.equal(found.pid, expected.pid);
  assert.equal(found.uid, 65534);
  assert.equal(found.comm, expected.comm);
  assert.equal(found.cgroupId, cgroupId(expected.cgroup));
  assert.deepEqual([found.dst_ip, found.dst_port], expected.dst);
}

testWhen(
  reason,
  "kernel attribution: TCP (REDIRECTed) and UDP clients are attributed to their exact pid",
  async () => {
    await withCgroup("attr", (cgroup) =>
      withNetns("a", async (netns, server) => {
        const instance = await InstanceChild.start({
          instance: `${RUN}-attr`,
          cgroup: cgroup.hierarchyPath,
          deny: false,
        }, netns);
        try {
          const inside = { cgroup, netns };
          const dst: [string, number] = [REDIRECTED_IP, 80];

          const c = await curl(inside, `http://${REDIRECTED_IP}/`);
          assertFound(await packet(instance, "tcp", CLIENT_IP, c.port, ...dst), {
            pid: c.pid,
            comm: "curl",
            cgroup,
            dst,
          });

          const p = await python(inside, ["tcp", REDIRECTED_IP, "80"]);
          assertFound(await packet(instance, "tcp", CLIENT_IP, p.port, ...dst), {
            pid: p.pid,
            comm: "python3",
            cgroup,
            dst,
          });

          const n = await node(inside, ["tcp", REDIRECTED_IP, "80"]);
          assertFound(await packet(instance, "tcp", CLIENT_IP, n.port, ...dst), {
            pid: n.pid,
            comm: "node",
            cgroup,
            dst,
          });

          // MPTCP (allowed by the deny hooks because it is TCP on the wire): its subflow passes
          // connect4 and sockops like plain TCP.
          const mp = await python(inside, ["mptcp", REDIRECTED_IP, "80"]);
          assertFound(await packet(instance, "tcp", CLIENT_IP, mp.port, ...dst), {
            pid: mp.pid,
            comm: "python3",
            cgroup,
            dst,
          });

          // v4-mapped on an IPv6 socket: connect6 only, attributed like IPv4.
          const m = await python(inside, ["tcp6", `::ffff:${REDIRECTED_IP}`, "80"]);
          assertFound(await packet(instance, "tcp", CLIENT_IP, m.port, ...dst), {
            pid: m.pid,
            comm: "python3",
            cgroup,
            dst,
          });

          // The proxy's view: accepted peer/local after REDIRECT → conntrack by reply tuple → entry.
          const accept = server.accepts().find((entry) => entry.peer[1] === c.port);
          assert.ok(accept, "the server logged curl's connection");
          assert.notEqual(accept.local[1], 80, "the connection was REDIRECTed");
          const viaProxy = (await instance.request({
            op: "accepted",
            peerIp: accept.peer[0],
            peerPort: accept.peer[1],
            localIp: accept.local[0],
            localPort: accept.local[1],
          })).result as Found | null;
          assertFound(viaProxy, { pid: c.pid, comm: "curl", cgroup, dst });

          const udp: [string, number] = [UDP_IP, 5353];
          const connected = await python(inside, ["udp-connected", ...udp.map(String)]);
          assertFound(await packet(instance, "udp", CLIENT_IP, connected.port, ...udp), {
            pid: connected.pid,
            comm: "python3",
            cgroup,
            dst: udp,
          });
          // dig (connected UDP from a worker thread): the tgid is dig's, whatever the thread is called.
          const digPort = 40000 + Math.floor(Math.random() * 20000);
          const dig = await client(inside, [
            "/usr/bin/dig",
            `@${UDP_IP}`,
            "-p",
            "5353",
            "-b",
            `${CLIENT_IP}#${digPort}`,
            "+tries=1",
            "+timeout=1",
            "example.com",
          ]);
          const digFound = await packet(instance, "udp", CLIENT_IP, digPort, ...udp);
          assert.ok(digFound, "dig's query is attributed");
          assert.equal(digFound.pid, dig.pid);
          assert.equal(digFound.uid, 65534);
          const unconnected = await python(inside, ["udp-sendto", ...udp.map(String)]);
          assertFound(await packet(instance, "udp", CLIENT_IP, unconnected.port, ...udp), {
            pid: unconnected.pid,
            comm: "python3",
            cgroup,
            dst: udp,
          });
          const nodeUdp = await node(inside, ["udp", ...udp.map(String)]);
          assertFound(await packet(instance, "udp", CLIENT_IP, nodeUdp.port, ...udp), {
            pid: nodeUdp.pid,
            comm: "node",
            cgroup,
            dst: udp,
          });
          const mappedConnected = await python(inside, ["udp6-connected", `::ffff:${UDP_IP}`, "5353"]);
          assertFound(await packet(instance, "udp", CLIENT_IP, mappedConnected.port, ...udp), {
            pid: mappedConnected.pid,
            comm: "python3",
            cgroup,
            dst: udp,
          });
          const mappedUdp = await python(inside, ["udp6-sendto", `::ffff:${UDP_IP}`, "5353"]);
          assertFound(await packet(instance, "udp", CLIENT_IP, mappedUdp.port, ...udp), {
            pid: mappedUdp.pid,
            comm: "python3",
            cgroup,
            dst: udp,
          });

          // Wrong port, wrong destination, wrong protocol: misses, never someone else's entry.
          assert.equal(await packet(instance, "tcp", CLIENT_IP, c.port, REDIRECTED_IP, 81), null);
          assert.equal(await packet(instance, "tcp", CLIENT_IP, c.port, "192.0.2.11", 80), null);
          assert.equal(await packet(instance, "udp", CLIENT_IP, c.port, ...dst), null);

          // A client outside the test cgroup is not recorded at all.
          const outsider = await python({ netns }, ["tcp", REDIRECTED_IP, "80"]);
          assert.equal(await packet(instance, "tcp", CLIENT_IP, outsider.port, ...dst), null);
        } finally {
          await instance.stop();
        }
      }));
  },
);

testWhen(
  reason,
  "kernel attribution: instances in two namespaces never read each other's entries",
  async () => {
    await withCgroup("two", (cgroup) =>
      withNetns("x", (netnsX) =>
        withNetns("y", async (netnsY) => {
          // Both namespaces use the same addresses; both instances watch the same cgroup.
          const options = (name: string) => ({
            instance: `${RUN}-${name}`,
            cgroup: cgroup.hierarchyPath,
            deny: false,
          });
          const instanceX = await InstanceChild.start(options("x"), netnsX);
          const instanceY = await InstanceChild.start(options("y"), netnsY);
          // And one in the test's own netns, for which both namespaces are foreign (source scope).
          const instanceHost = await InstanceChild.start(options("h"), undefined);
          try {
            assert.notEqual(instanceX.ready.netnsCookie, instanceY.ready.netnsCookie);
            const port = String(30000 + Math.floor(Math.random() * 20000));
            const dst: [string, number] = [REDIRECTED_IP, 80];
            const x = await python({ cgroup, netns: netnsX }, ["tcp", REDIRECTED_IP, "80", port]);
            const y = await python({ cgroup, netns: netnsY }, ["tcp", REDIRECTED_IP, "80", port]);
            assert.equal(x.port, y.port);
            assertFound(await packet(instanceX, "tcp", CLIENT_IP, x.port, ...dst), {
              pid: x.pid,
              comm: "python3",
              cgroup,
              dst,
            });
            assertFound(await packet(instanceY, "tcp", CLIENT_IP, y.port, ...dst), {
              pid: y.pid,
              comm: "python3",
              cgroup,
              dst,
            });

            const ux = await python({ cgroup, netns: netnsX }, ["udp-connected", UDP_IP, "5353", port]);
            const uy = await python({ cgroup, netns: netnsY }, ["udp-connected", UDP_IP, "5353", port]);
            const udp: [string, number] = [UDP_IP, 5353];
            assertFound(await packet(instanceX, "udp", CLIENT_IP, ux.port, ...udp), {
              pid: ux.pid,
              comm: "python3",
              cgroup,
              dst: udp,
            });
            assertFound(await packet(instanceY, "udp", CLIENT_IP, uy.port, ...udp), {
              pid: uy.pid,
              comm: "python3",
              cgroup,
              dst: udp,
            });

            // For the host instance both are foreign clients keyed by source address: the later one
            // wins that key, and it is one of the two real clients, never a mix.
            const seen = await packet(instanceHost, "tcp", CLIENT_IP, x.port, ...dst);
            assert.ok(
              seen && [x.pid, y.pid].includes(seen.pid),
              "host instance sees a foreign client by source",
            );
            assert.equal(seen.pid, y.pid, "the newest connection owns the source-scoped key");
          } finally {
            await instanceX.stop();
            await instanceY.stop();
            await instanceHost.stop();
          }
        })));
  },
);

const BRIDGE_IP = "198.51.100.1";
const CONTAINER_IP = "198.51.100.2";
const FAR_IP = "203.0.113.10";

testWhen(
  reason,
  "kernel attribution: a container's connection over a bridge is attributed by client address (proxy view)",
  async () => {
    await withCgroup("br", async (cgroup) => {
      // "host" netns with a bridge; "container" netns on it, routing through the host, whose
      // PREROUTING REDIRECTs the container's TCP to a local server (what steering does for docker0).
      const host = await TestNetns.create(`${RUN}-bh`);
      let container: TestNetns | undefined;
      let server: Server | undefined;
      let instance: InstanceChild | undefined;
      try {
        container = await TestNetns.create(`${RUN}-bc`);
        await host.exec(["ip", "link", "add", "br0", "type", "bridge"]);
        await host.exec(["ip", "addr", "add", `${BRIDGE_IP}/24`, "dev", "br0"]);
        await host.exec(["ip", "link", "set", "br0", "up"]);
        await host.exec([
          "ip",
          "link",
          "add",
          "h0",
          "type",
          "veth",
          "peer",
          "name",
          "c0",
          "netns",
          container.path,
        ]);
        await host.exec(["ip", "link", "set", "h0", "master", "br0", "up"]);
        await container.exec(["ip", "addr", "add", `${CONTAINER_IP}/24`, "dev", "c0"]);
        await container.exec(["ip", "link", "set", "c0", "up"]);
        await container.exec(["ip", "route", "add", "default", "via", BRIDGE_IP]);
        await host.exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        await host.exec([
          "iptables",
          "-t",
          "nat",
          "-A",
          "PREROUTING",
          "-i",
          "br0",
          "-p",
          "tcp",
          "-d",
          FAR_IP,
          "--dport",
          "80",
          "-j",
          "REDIRECT",
          "--to-ports",
          String(LISTEN_PORT),
        ]);
        server = await Server.start(host, `/tmp/${host.name}-accepts.jsonl`, [`0.0.0.0:${LISTEN_PORT}`]);
        instance = await InstanceChild.start({
          instance: `${RUN}-br`,
          cgroup: cgroup.hierarchyPath,
          deny: false,
        }, host);

        const c = await python({ cgroup, netns: container }, ["tcp", FAR_IP, "80"]);
        const accept = server.accepts().find((entry) => entry.peer[1] === c.port);
        assert.ok(accept, "the host's server accepted the container's connection");
        assert.equal(accept.peer[0], CONTAINER_IP, "forwarded, not masqueraded");
        const found = (await instance.request({
          op: "accepted",
          peerIp: accept.peer[0],
          peerPort: accept.peer[1],
          localIp: accept.local[0],
          localPort: accept.local[1],
        })).result as Found | null;
        assertFound(found, { pid: c.pid, comm: "python3", cgroup, dst: [FAR_IP, 80] });
        // The same tuple from a host-local client address would be netns-scoped: no entry there.
        assert.equal(await packet(instance, "tcp", BRIDGE_IP, c.port, FAR_IP, 80), null);
      } finally {
        await instance?.stop();
        await server?.stop();
        await container?.remove();
        await host.remove();
      }
    });
  },
);
