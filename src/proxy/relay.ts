// Raw relay between two streams, both directions, with half-close: when one side ends its
// writing, the other side's write end is closed and the opposite direction keeps flowing.
// Memory per direction: one chunk in flight (each write is awaited before the next read).

import type { BufferedReader } from "./streams.ts";

export type RelayResult = { toUpstream: number; toClient: number; error?: string };

async function pump(
  from: BufferedReader,
  to: BufferedReader,
  count: (n: number) => void,
): Promise<void> {
  for (;;) {
    const chunk = await from.read();
    if (chunk === null) break;
    await to.stream.write(chunk);
    count(chunk.length);
  }
  await to.stream.closeWrite();
}

/**
 * Relays until both directions ended (or one failed), then closes both streams. Bytes already
 * pushed back into a reader (peeked ClientHello, bytes after a head) go out first.
 */
export async function relayBothWays(client: BufferedReader, upstream: BufferedReader): Promise<RelayResult> {
  const result: RelayResult = { toUpstream: 0, toClient: 0 };
  const closeBoth = () => {
    client.stream.close();
    upstream.stream.close();
  };
  const fail = (error: unknown) => {
    result.error ??= error instanceof Error ? error.message : String(error);
    closeBoth();
  };
  await Promise.all([
    pump(client, upstream, (n) => (result.toUpstream += n)).catch(fail),
    pump(upstream, client, (n) => (result.toClient += n)).catch(fail),
  ]);
  closeBoth();
  return result;
}
