// A small authoritative-ish DNS server for tests, on a loopback address (UDP and TCP, same port).
// Names it knows (any case):
//   slow.*                never answered (the proxy must time out)
//   big.*                 over UDP: TC=1 and no answers; over TCP: 3 A answers
//   *                     A 192.0.2.<n> (n from a table, default 192.0.2.1), TTL 120; TXT for TXT
// An OPT record in the query is echoed with the same payload size.

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";
import { DnsTcpDeframer, frameDnsTcp } from "../../src/proto/dns_detect.ts";

export type SeenQuery = {
  transport: "udp" | "tcp";
  id: number;
  name: string;
  type: string;
  udpPayloadSize?: number;
};

export type FakeUpstream = {
  ip: string;
  port: number;
  seen: SeenQuery[];
  /** name → answer IPs (A) */
  answers: Map<string, string[]>;
  close(): Promise<void>;
};

function answer(
  query: dnsPacket.Packet,
  transport: "udp" | "tcp",
  answers: Map<string, string[]>,
): Buffer | undefined {
  const question = query.questions?.[0];
  if (!question) return undefined;
  const name = question.name.toLowerCase();
  if (name.startsWith("slow.")) return undefined;
  const opt = query.additionals?.find((record: { type: string }) => record.type === "OPT") as
    | { udpPayloadSize?: number }
    | undefined;
  const response: dnsPacket.Packet = {
    type: "response",
    id: query.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER,
    questions: query.questions,
    answers: [],
    additionals: opt
      ? [{ type: "OPT", name: ".", udpPayloadSize: opt.udpPayloadSize ?? 512 } as dnsPacket.Answer]
      : [],
  };
  if (name.startsWith("big.") && transport === "udp") {
    response.flags = (response.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE;
  } else if (question.type === "TXT") {
    response.answers = [{ type: "TXT", name: question.name, ttl: 30, data: "ok" }];
  } else if (question.type === "A") {
    const ips = name.startsWith("big.")
      ? ["192.0.2.101", "192.0.2.102", "192.0.2.103"]
      : answers.get(name) ?? ["192.0.2.1"];
    response.answers = ips.map((ip, i) => ({
      type: "A" as const,
      name: question.name,
      ttl: 120 + i * 10,
      data: ip,
    }));
  }
  return dnsPacket.encode(response);
}

export async function startFakeUpstream(ip = "127.0.0.2", fixedPort = 0): Promise<FakeUpstream> {
  const seen: SeenQuery[] = [];
  const answers = new Map<string, string[]>();
  const record = (packet: dnsPacket.Packet, transport: "udp" | "tcp") => {
    const opt = packet.additionals?.find((r: { type: string }) => r.type === "OPT") as {
      udpPayloadSize?: number;
    } | undefined;
    seen.push({
      transport,
      id: packet.id ?? 0,
      name: packet.questions?.[0]?.name ?? "",
      type: packet.questions?.[0]?.type ?? "",
      udpPayloadSize: opt?.udpPayloadSize,
    });
  };
  const socket = dgram.createSocket("udp4");
  socket.on("message", (message, rinfo) => {
    let packet: dnsPacket.Packet;
    try {
      packet = dnsPacket.decode(message);
    } catch {
      return;
    }
    record(packet, "udp");
    const reply = answer(packet, "udp", answers);
    if (reply) socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(fixedPort, ip, () => resolve()));
  const port = socket.address().port;
  const listener = Deno.listen({ hostname: ip, port });
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        const deframer = new DnsTcpDeframer();
        const buffer = new Uint8Array(4096);
        try {
          for (;;) {
            const n = await conn.read(buffer);
            if (n === null) break;
            for (const message of deframer.push(buffer.subarray(0, n))) {
              const packet = dnsPacket.decode(Buffer.from(message));
              record(packet, "tcp");
              const reply = answer(packet, "tcp", answers);
              if (reply) await conn.write(frameDnsTcp(new Uint8Array(reply)));
            }
          }
        } catch {
          // client went away
        } finally {
          conns.delete(conn);
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      })();
    }
  })().catch(() => {});
  return {
    ip,
    port,
    seen,
    answers,
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

/** Sends one UDP datagram from a socket bound to `bindPort` (0: any) and waits for one reply. */
export async function udpExchange(
  server: { ip: string; port: number },
  message: Uint8Array,
  options: { bindPort?: number; bindIp?: string; timeoutMs?: number } = {},
): Promise<Uint8Array | undefined> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) =>
    socket.bind(options.bindPort ?? 0, options.bindIp ?? "127.0.0.1", () => resolve())
  );
  try {
    return await new Promise<Uint8Array | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), options.timeoutMs ?? 2000);
      socket.on("message", (reply) => {
        clearTimeout(timer);
        resolve(new Uint8Array(reply));
      });
      socket.send(message, server.port, server.ip);
    });
  } finally {
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}

export function encodeQuery(
  id: number,
  names: string[],
  options: { type?: string; udpPayloadSize?: number } = {},
): Uint8Array {
  const packet: dnsPacket.Packet = {
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: names.map((name) => ({ type: (options.type ?? "A") as "A", name })),
    additionals: options.udpPayloadSize
      ? [{ type: "OPT", name: ".", udpPayloadSize: options.udpPayloadSize } as dnsPacket.Answer]
      : [],
  };
  return new Uint8Array(dnsPacket.encode(packet));
}

export function decode(bytes: Uint8Array): dnsPacket.Packet & { rcode?: string; flag_tc?: boolean } {
  return dnsPacket.decode(Buffer.from(bytes)) as dnsPacket.Packet & { rcode?: string; flag_tc?: boolean };
}

/** A UDP port free on 127.0.0.1 right now (bound and released). */
export async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  const port = socket.address().port;
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}
