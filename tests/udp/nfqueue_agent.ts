// Child process for the nfqueue tests, run INSIDE the test's network namespace (under nsenter).
//
//   consumer <queueNum> [copyRange|-] [receiveBufferBytes]
//                                     bind the queue; verdict by the first UDP data byte (below);
//                                     stdin commands: "stats", "malformed", "close" (each answers
//                                     with one JSON line on stdout)
//   traffic <port> <count> <letters> [empty]
//                                     receive on 127.0.0.1:<port>, send <count> datagrams to it
//                                     (datagram i starts with letters[i % letters.length]; with
//                                     "empty", zero-length datagrams), then print what arrived
//
// Verdict by first data byte: A accept, D drop, M accept with mark 0x42, R repeat with mark 0x100,
// X onPacket throws, B onPacket returns an invalid verdict, S accept after 2 ms of busy work (a slow
// handler); no data byte (short copy range or empty datagram) ⇒ accept.

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import {
  ACCEPT,
  DROP,
  NfqueueConsumer,
  type NfqueueVerdict,
  readNfqueueStats,
} from "../../src/udp/nfqueue.ts";

const MARKED: NfqueueVerdict = { verdict: "accept", mark: 0x42 };
const REPEAT_MARKED: NfqueueVerdict = { verdict: "repeat", mark: 0x100 };
const BOGUS = { verdict: "bogus" } as unknown as NfqueueVerdict;

function print(value: unknown): void {
  console.log(JSON.stringify(value));
}

async function* lines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of Deno.stdin.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let index: number;
    while ((index = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, index).trim();
      pending = pending.slice(index + 1);
    }
  }
}

/** Netlink messages that are wrong in assorted ways, addressed to `queueNum`. */
function malformedMessages(queueNum: number): Uint8Array[] {
  const NFNL_SUBSYS_QUEUE = 3;
  const NFQNL_MSG_PACKET = 0;
  const message = (attributes: Uint8Array, lengthDelta = 0): Uint8Array => {
    const length = 16 + 4 + attributes.length;
    const bytes = new Uint8Array(length);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, length + lengthDelta, true); // nlmsg_len
    view.setUint16(4, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET, true); // nlmsg_type
    view.setUint16(6, 0, true); // flags
    bytes[16] = 2; // nfgen_family AF_INET
    bytes[17] = 0; // version
    view.setUint16(18, queueNum, false); // res_id, big-endian
    bytes.set(attributes, 20);
    return bytes;
  };
  const attribute = (type: number, payload: Uint8Array, lengthDelta = 0): Uint8Array => {
    const length = 4 + payload.length;
    const bytes = new Uint8Array((length + 3) & ~3);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, length + lengthDelta, true);
    view.setUint16(2, type, true);
    bytes.set(payload, 4);
    return bytes;
  };
  const NFQA_PACKET_HDR = 1;
  const NFQA_PAYLOAD = 10;
  // An id far beyond any real one, so the verdicts these earn can never hit a queued packet.
  const header = new Uint8Array([0xff, 0xff, 0xff, 0xf0, 0x08, 0x00, 3, 0]);
  const join = (...parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  };
  return [
    new Uint8Array(0), // nothing
    new Uint8Array([1, 2, 3]), // shorter than a netlink header
    message(new Uint8Array(0)), // no attributes: no packet header
    message(attribute(NFQA_PAYLOAD, new Uint8Array([0x45, 0]))), // payload but no packet header
    message(attribute(NFQA_PACKET_HDR, header.subarray(0, 3))), // truncated packet header
    message(join(attribute(NFQA_PACKET_HDR, header), attribute(NFQA_PAYLOAD, new Uint8Array(0)))), // empty
    message(join(attribute(NFQA_PACKET_HDR, header), attribute(NFQA_PAYLOAD, new Uint8Array([0x45])))), // 1 byte
    message(join(attribute(NFQA_PACKET_HDR, header), attribute(NFQA_PAYLOAD, new Uint8Array(8), 400))), // attr overruns
    message(attribute(NFQA_PACKET_HDR, header), 1000), // nlmsg_len beyond the message
    message(attribute(NFQA_PACKET_HDR, header), -12), // nlmsg_len too small for its attributes
  ];
}

async function consumer(
  queueNum: number,
  copyRange: number | undefined,
  receiveBufferBytes: number | undefined,
): Promise<void> {
  const firstIds: number[] = [];
  let maxPayloadLength = 0;
  const byLetter: Record<string, number> = {};
  let consumer: NfqueueConsumer;
  try {
    consumer = openConsumer();
  } catch (error) {
    print({ error: (error as Error).message });
    Deno.exit(1);
  }
  function openConsumer() {
    return NfqueueConsumer.open({
      queueNum,
      copyRange,
      receiveBufferBytes,
      onPacket(packet) {
        if (firstIds.length < 5) firstIds.push(packet.id);
        if (packet.payloadLength > maxPayloadLength) maxPayloadLength = packet.payloadLength;
        const bytes = packet.bytes;
        const start = packet.payloadOffset;
        const headerLength = packet.payloadLength > 0 ? (bytes[start] & 0x0f) * 4 : 0;
        const dataIndex = headerLength + 8;
        if (packet.payloadLength <= dataIndex) return ACCEPT;
        const letter = String.fromCharCode(bytes[start + dataIndex]);
        byLetter[letter] = (byLetter[letter] ?? 0) + 1;
        switch (letter) {
          case "S": {
            const until = performance.now() + 2;
            while (performance.now() < until) { /* busy on purpose */ }
            return ACCEPT;
          }
          case "A":
            return ACCEPT;
          case "M":
            return MARKED;
          case "R":
            return packet.mark & 0x100 ? ACCEPT : REPEAT_MARKED;
          case "X":
            throw new Error("handler failure on purpose");
          case "B":
            return BOGUS;
          default:
            return DROP;
        }
      },
    });
  }
  let fatal: string | undefined;
  consumer.finished.catch((error) => fatal = String(error));
  const report = () => ({
    counters: consumer.counters,
    kernel: readNfqueueStats(queueNum) ?? null,
    firstIds,
    maxPayloadLength,
    byLetter,
    fatal: fatal ?? null,
  });
  print({ ready: true });
  for await (const line of lines()) {
    if (line === "stats") print(report());
    else if (line === "malformed") {
      const messages = malformedMessages(queueNum);
      for (const message of messages) consumer.processMessage(message);
      print({ injected: messages.length, ...report() });
    } else if (line === "close") {
      await consumer.close();
      await consumer.close(); // idempotent
      print({ closed: true, kernelAfterClose: readNfqueueStats(queueNum) ?? null, ...report() });
      return;
    }
  }
  await consumer.close();
}

/** UDP RcvbufErrors of this namespace: datagrams the receiving socket itself had no room for. */
function udpReceiveBufferErrors(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((line) => line.startsWith("Udp:"));
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  return Number(values[names.indexOf("RcvbufErrors")]);
}

async function traffic(port: number, count: number, letters: string, empty: boolean): Promise<void> {
  const receiver = dgram.createSocket("udp4");
  const sender = dgram.createSocket("udp4");
  const received: Record<string, number> = {};
  let receivedTotal = 0;
  let lastArrival = Date.now();
  receiver.on("message", (message: Buffer) => {
    receivedTotal++;
    lastArrival = Date.now();
    const key = message.length === 0 ? "empty" : String.fromCharCode(message[0]);
    received[key] = (received[key] ?? 0) + 1;
  });
  await new Promise<void>((resolve) => receiver.bind(port, "127.0.0.1", resolve));
  try {
    receiver.setRecvBufferSize(4 * 1024 * 1024);
  } catch {
    // rmem_max caps it; the modest send rate below copes with the default.
  }
  let sent = 0;
  for (let i = 0; i < count; i++) {
    const payload = empty ? Buffer.alloc(0) : Buffer.from(`${letters[i % letters.length]}:${i}`);
    await new Promise<void>((resolve, reject) =>
      sender.send(payload, port, "127.0.0.1", (error) => error ? reject(error) : resolve())
    );
    sent++;
    // Modest rate: let the consumer and receiver keep up (the burst test counts every packet).
    if (i % 25 === 24) await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const deadline = Date.now() + 5000;
  lastArrival = Math.max(lastArrival, Date.now());
  while (Date.now() < deadline && Date.now() - lastArrival < 700) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  sender.close();
  receiver.close();
  print({ sent, receivedTotal, received, receiveBufferErrors: udpReceiveBufferErrors() });
}

const [mode, ...args] = Deno.args;
if (mode === "consumer") {
  const optional = (text: string | undefined) =>
    text === undefined || text === "-" ? undefined : Number(text);
  await consumer(Number(args[0]), optional(args[1]), optional(args[2]));
} else if (mode === "traffic") {
  await traffic(Number(args[0]), Number(args[1]), args[2] ?? "A", args[3] === "empty");
} else {
  console.error(`Cannot run the nfqueue agent: unknown mode ${mode}`);
  Deno.exit(2);
}
