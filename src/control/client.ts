// Control socket client used by `egress stop` and `egress status`.

import { type ControlReply, parseReply } from "./protocol.ts";

export class ControlUnreachable extends Error {
  constructor(readonly path: string, readonly missing: boolean, reason: string) {
    super(`Cannot reach the egress daemon at ${path}: ${reason}`);
    this.name = "ControlUnreachable";
  }
}

/** Sends one command line and returns the one-line reply. */
export async function sendControlCommand(
  path: string,
  command: string,
  timeoutMs = 5000,
): Promise<ControlReply> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (error) {
    const missing = error instanceof Deno.errors.NotFound;
    throw new ControlUnreachable(path, missing, missing ? "no such socket" : (error as Error).message);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const bytes = new TextEncoder().encode(command + "\n");
    let offset = 0;
    while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
    const chunks: Uint8Array[] = [];
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    let total = 0;
    for (;;) {
      const buffer = new Uint8Array(4096);
      const read = conn.read(buffer);
      const n = await Promise.race([read, timeout]);
      if (n === "timeout") {
        read.catch(() => {});
        throw new ControlUnreachable(path, false, `no reply within ${timeoutMs} ms`);
      }
      if (n === null) break;
      chunks.push(buffer.subarray(0, n));
      total += n;
      if (buffer.subarray(0, n).includes(10) || total > 65536) break;
    }
    const text = new TextDecoder().decode(concat(chunks));
    const line = text.split("\n")[0];
    if (line === "") {
      throw new ControlUnreachable(path, false, "the daemon closed the connection without a reply");
    }
    return parseReply(line);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed already
    }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
