// A minimal NFQUEUE consumer for tests/netfilter (not the real one): it plays the consumer's part of
// the steering contract with a fixed test policy, so the mark rules can be exercised for real.
//   UDP to port 53   → DNS mark (added to the packet's mark) + NF_REPEAT
//   UDP to port 7000 → allowed-flow mark + NF_REPEAT
//   anything else    → NF_DROP
// Usage: queue_consumer.ts QUEUE_NUM DNS_MARK ALLOWED_MARK. Prints "ready"; every stdin line asks for
// the per-port packet counts as one JSON line; stdin EOF ends it.
import { NF_DROP, NF_REPEAT, NfqHandle, NFQNL_COPY_PACKET } from "../../ffi/libnetfilter_queue.ts";
import { EAGAIN, errno, libc, MSG_DONTWAIT, POLLIN } from "../../ffi/libc.ts";
import { withMarkBits } from "../../src/netfilter/rules.ts";

const [queueNum, dnsMark, allowedMark] = Deno.args.map(Number);
const counts: Record<string, number> = {};

const handle = NfqHandle.open();
const queue = handle.createQueue(queueNum, (packet) => {
  if (!packet.hasHeader) return;
  const bytes = packet.payloadBuffer.subarray(
    packet.payloadOffset,
    packet.payloadOffset + packet.payloadLength,
  );
  const headerLength = (bytes[0] & 0x0f) * 4;
  const port = bytes[9] === 17 && bytes.length >= headerLength + 4
    ? (bytes[headerLength + 2] << 8) | bytes[headerLength + 3]
    : -1;
  counts[port] = (counts[port] ?? 0) + 1;
  if (port === 53) queue.setVerdict(packet.id, NF_REPEAT, withMarkBits(packet.mark, dnsMark));
  else if (port === 7000) queue.setVerdict(packet.id, NF_REPEAT, withMarkBits(packet.mark, allowedMark));
  else queue.setVerdict(packet.id, NF_DROP);
});
queue.setMode(NFQNL_COPY_PACKET, 128);

let running = true;
const buffer = new Uint8Array(65536);
const pollfd = new Uint8Array(8);
new DataView(pollfd.buffer).setInt32(0, handle.fd, true);
new DataView(pollfd.buffer).setInt16(4, POLLIN, true);

async function receiveLoop(): Promise<void> {
  while (running) {
    const length = Number(libc().recv(handle.fd, buffer, BigInt(buffer.length), MSG_DONTWAIT));
    if (length > 0) {
      handle.handleMessages(buffer, 0, length);
      continue;
    }
    if (length < 0 && errno() !== EAGAIN) throw new Error(`recv failed: errno ${errno()}`);
    await libc().poll_async(pollfd, 1n, 100);
  }
}

async function controlLoop(): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    for (const _ of decoder.decode(chunk).split("\n").slice(1)) console.log(JSON.stringify(counts));
  }
  running = false;
}

console.log("ready");
await Promise.all([receiveLoop(), controlLoop()]);
handle.close();
