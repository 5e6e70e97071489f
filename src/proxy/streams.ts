// Byte streams the proxy relays between: one small interface over Deno connections (plain TCP,
// Deno TLS upstream) and node:tls sockets (intercepted client side, insecure upstream), plus a
// reader with push-back so peeked bytes are never lost. Every write is awaited (backpressure)
// and loops over partial writes; buffers are bounded by one read chunk plus the push-back.

import { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";

/** Read chunk size: large enough for throughput, small enough to keep memory per connection low. */
export const READ_CHUNK = 64 * 1024;
/** First read size: an idle keep-alive connection holds only this much while it waits. */
export const IDLE_READ_CHUNK = 4 * 1024;

/**
 * A read buffer that starts small and grows to READ_CHUNK once a read fills it (a bulk transfer),
 * then shrinks back after a run of small reads, so that idle connections (most of them, at a
 * thousand concurrent) do not each pin 64 KiB per direction.
 */
export class AdaptiveReadBuffer {
  #buffer = new Uint8Array(IDLE_READ_CHUNK);
  #smallReads = 0;

  get bytes(): Uint8Array {
    return this.#buffer;
  }

  /** Records how much the last read returned and resizes for the next one. */
  filled(n: number): void {
    const size = this.#buffer.length;
    if (n === size && size < READ_CHUNK) {
      this.#buffer = new Uint8Array(READ_CHUNK);
      this.#smallReads = 0;
    } else if (size > IDLE_READ_CHUNK && n < IDLE_READ_CHUNK && ++this.#smallReads >= 8) {
      this.#buffer = new Uint8Array(IDLE_READ_CHUNK);
      this.#smallReads = 0;
    } else if (n >= IDLE_READ_CHUNK) {
      this.#smallReads = 0;
    }
  }
}

export interface ByteStream {
  /** Next chunk, or null at end of stream. Only one read may be pending at a time. */
  read(): Promise<Uint8Array | null>;
  /** Resolves once every byte was handed to the transport. */
  write(bytes: Uint8Array): Promise<void>;
  /** Half-close: no more writes; reads go on. Never throws. */
  closeWrite(): Promise<void>;
  /** Closes both directions. Idempotent, never throws. */
  close(): void;
}

/** Writes all of `bytes`, looping over partial writes (ARCHITECTURE.md: they do happen). */
export async function writeAllTo(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const n = await conn.write(bytes.subarray(offset));
    if (n <= 0) throw new Error("Cannot write to connection: wrote 0 bytes");
    offset += n;
  }
}

/** A Deno.Conn (TCP or TLS) as a ByteStream. */
export class DenoConnStream implements ByteStream {
  readonly #conn: Deno.Conn;
  readonly #buffer = new AdaptiveReadBuffer();
  #closed = false;
  #writeClosed = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  get conn(): Deno.Conn {
    return this.#conn;
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    const buffer = this.#buffer.bytes;
    const n = await this.#conn.read(buffer);
    if (n === null) return null;
    this.#buffer.filled(n);
    return buffer.slice(0, n);
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.#closed || this.#writeClosed) throw new Error("Cannot write: the connection is closed");
    await writeAllTo(this.#conn, bytes);
  }

  async closeWrite(): Promise<void> {
    if (this.#closed || this.#writeClosed) return;
    this.#writeClosed = true;
    try {
      await this.#conn.closeWrite();
    } catch {
      // peer already gone
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

/** Bytes queued from a node socket before it is paused. */
const NODE_HIGH_WATER = 256 * 1024;

/** A node:tls socket (or any node Duplex socket) as a ByteStream, with pause/resume backpressure. */
export class NodeSocketStream implements ByteStream {
  readonly socket: TLSSocket | Duplex;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #waiter: (() => void) | undefined;
  #closed = false;

  constructor(socket: TLSSocket | Duplex) {
    this.socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      this.#queue.push(bytes);
      this.#queued += bytes.length;
      if (this.#queued >= NODE_HIGH_WATER) socket.pause();
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      this.#wake();
    });
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      const chunk = this.#queue.shift();
      if (chunk) {
        this.#queued -= chunk.length;
        if (this.#queued < NODE_HIGH_WATER && this.socket.isPaused()) this.socket.resume();
        return chunk;
      }
      if (this.#error) throw this.#error;
      if (this.#ended || this.#closed) return null;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.#closed || this.socket.destroyed || this.socket.writableEnded) {
      return Promise.reject(new Error("Cannot write: the connection is closed"));
    }
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (error?: Error | null) => (error ? reject(error) : resolve()));
    });
  }

  closeWrite(): Promise<void> {
    if (this.#closed || this.socket.writableEnded || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      // A peer that vanished never acknowledges; do not hang on it.
      const timer = setTimeout(resolve, 1000);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      try {
        this.socket.end(done);
      } catch {
        done();
      }
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.socket.destroy();
    } catch {
      // already destroyed
    }
    this.#wake();
  }
}

/**
 * A node Duplex over a Deno.Conn, replaying `initial` first: the transport under a node:tls
 * server socket after the ClientHello was peeked (`socket.unshift` does not work for that).
 */
export function duplexOverConn(conn: Deno.Conn, initial: Uint8Array): Duplex {
  let pending: Uint8Array | undefined = initial.length > 0 ? initial : undefined;
  let reading = false;
  let closed = false;
  const buffer = new AdaptiveReadBuffer();
  const duplex: Duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (pending) {
        const first = pending;
        pending = undefined;
        if (!this.push(first)) return;
      }
      if (reading || closed) return;
      reading = true;
      const pump = async () => {
        try {
          for (;;) {
            const bytes = buffer.bytes;
            const n = await conn.read(bytes);
            if (n === null) {
              this.push(null);
              return;
            }
            buffer.filled(n);
            if (!this.push(bytes.slice(0, n))) return;
          }
        } catch (error) {
          if (!closed) this.destroy(error as Error);
        } finally {
          reading = false;
        }
      };
      pump();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAllTo(conn, chunk).then(() => callback(), (error) => callback(error));
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), () => callback());
    },
    destroy(error, callback) {
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
      callback(error);
    },
  });
  return duplex;
}

/**
 * Reader with push-back over a ByteStream: the classifier and the HTTP parser look at bytes and
 * hand back what belongs to the next stage. The push-back holds at most what was read.
 */
/** A BufferedReader wait that ran out of time (the connection itself may still be fine). */
export class ReadTimeout extends Error {
  constructor(ms: number) {
    super(`no data within ${ms} ms`);
  }
}

export class BufferedReader {
  readonly stream: ByteStream;
  #pushedBack: Uint8Array[] = [];
  /** A read that was started but whose chunk was not consumed yet (watch, or a timed-out wait). */
  #inflight: Promise<Uint8Array | null> | undefined;
  #eof = false;

  constructor(stream: ByteStream) {
    this.stream = stream;
  }

  /** True once the stream reported its end (seen by a read or by watch). */
  get ended(): boolean {
    return this.#eof && this.#pushedBack.length === 0;
  }

  unread(bytes: Uint8Array): void {
    if (bytes.length > 0) this.#pushedBack.unshift(bytes);
  }

  /**
   * Next chunk (push-back first), or ReadTimeout after `timeoutMs`. A timed-out wait leaves the
   * underlying read in flight; the next call takes over its result, so no bytes are lost.
   */
  async read(timeoutMs?: number): Promise<Uint8Array | null> {
    const back = this.#pushedBack.shift();
    if (back) return back;
    if (this.#eof && !this.#inflight) return null;
    const inflight = this.#start();
    if (timeoutMs === undefined) {
      try {
        return await inflight;
      } finally {
        this.#inflight = undefined;
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), Math.max(0, timeoutMs));
    });
    let result: Uint8Array | null | "timeout";
    try {
      result = await Promise.race([inflight, timeout]);
    } catch (error) {
      this.#inflight = undefined;
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (result === "timeout") throw new ReadTimeout(timeoutMs);
    this.#inflight = undefined;
    return result;
  }

  #start(): Promise<Uint8Array | null> {
    if (this.#inflight) return this.#inflight;
    const inflight = this.stream.read().then((chunk) => {
      if (chunk === null) this.#eof = true;
      return chunk;
    }, (error) => {
      this.#eof = true;
      throw error;
    });
    this.#inflight = inflight;
    return inflight;
  }

  /**
   * Starts reading ahead without consuming: used on idle upstream connections so that a server
   * that closed is noticed (`ended`) before the next request is sent to it.
   */
  watch(): void {
    if (this.#eof || this.#pushedBack.length > 0) return;
    this.#start().catch(() => {});
  }

  /**
   * Resolves once a chunk, the end or an error is waiting, without consuming it (the next
   * `read` returns it): lets the proxy see which side of a connection speaks first.
   */
  async ready(): Promise<void> {
    if (this.#pushedBack.length > 0 || (this.#eof && !this.#inflight)) return;
    await this.#start().then(() => {}, () => {});
  }
}

/** Joins chunks (small helper for head buffers). */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
