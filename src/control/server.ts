// Control socket server (runner.md §5). A stream Unix socket, root-only for now (mode 0600, owned
// by root) until SO_PEERCRED authentication arrives: the socket is bound under a temporary name,
// restricted, then renamed into place, so no client can connect while it is still open to all.

import { errorLine, MAX_REQUEST_BYTES, parseRequest, REQUEST_TIMEOUT_MS } from "./protocol.ts";

/** What a command handler returns: the reply line, and what to do once it has been sent. */
export type ControlAnswer = { reply: string; afterReply?: () => void };

export type ControlHandler = (command: string, args: string[]) => Promise<ControlAnswer> | ControlAnswer;

export type ControlServerOptions = {
  path: string;
  handler: ControlHandler;
  /** Operational log sink for callers and failures. */
  log?: (level: "info" | "warn" | "error", message: string) => void;
  requestTimeoutMs?: number;
  /** File mode of the socket (default 0o600). */
  mode?: number;
};

export class ControlServer {
  readonly path: string;
  readonly #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  readonly #options: ControlServerOptions;
  readonly #connections = new Set<Deno.UnixConn>();
  #loop: Promise<void>;
  #closed = false;
  #removed = false;

  private constructor(listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>, options: ControlServerOptions) {
    this.path = options.path;
    this.#listener = listener;
    this.#options = options;
    this.#loop = this.#acceptLoop();
  }

  /** Binds the socket (an existing file at `path` must have been removed by the caller). */
  static async listen(options: ControlServerOptions): Promise<ControlServer> {
    const temporary = `${options.path}.${Deno.pid}.tmp`;
    await Deno.remove(temporary).catch(() => {});
    let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr> | undefined;
    try {
      listener = Deno.listen({ transport: "unix", path: temporary });
      await Deno.chmod(temporary, options.mode ?? 0o600);
      if (Deno.uid() === 0) await Deno.chown(temporary, 0, 0);
      await Deno.rename(temporary, options.path);
    } catch (error) {
      listener?.close();
      await Deno.remove(temporary).catch(() => {});
      throw new Error(`Cannot open control socket ${options.path}: ${(error as Error).message}`);
    }
    return new ControlServer(listener, options);
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        this.#options.log?.("error", `control socket: cannot accept: ${(error as Error).message}`);
        return;
      }
      this.#connections.add(conn);
      this.#serve(conn).finally(() => this.#connections.delete(conn));
    }
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const log = this.#options.log;
    let afterReply: (() => void) | undefined;
    try {
      const line = await readRequestLine(conn, this.#options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
      let reply: string;
      if (line.kind !== "line") {
        reply = errorLine(line.kind === "too_long" ? "request too long" : "request timed out");
        log?.("warn", `control socket: refused a request (${line.kind.replace("_", " ")})`);
      } else {
        const { command, args } = parseRequest(line.text);
        log?.("info", `control socket: ${JSON.stringify(command)} from a local root client`);
        try {
          const answer = await this.#options.handler(command, args);
          reply = answer.reply;
          afterReply = answer.afterReply;
        } catch (error) {
          reply = errorLine(`internal error: ${(error as Error).message}`);
          log?.(
            "error",
            `control socket: command ${JSON.stringify(command)} failed: ${(error as Error).message}`,
          );
        }
      }
      await writeAll(conn, new TextEncoder().encode(reply.replace(/\n/g, " ") + "\n"));
      // Unread request bytes would turn the close into a reset that can destroy the reply.
      await conn.closeWrite().catch(() => {});
      await drain(conn, 200);
    } catch (error) {
      if (!this.#closed) {
        log?.("warn", `control socket: client connection failed: ${(error as Error).message}`);
      }
    } finally {
      try {
        conn.close();
      } catch {
        // closed already
      }
    }
    afterReply?.();
  }

  /** Stops accepting (new clients get ECONNREFUSED); the socket file stays until remove(). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // closed already
    }
    for (const conn of this.#connections) {
      try {
        conn.close();
      } catch {
        // closed already
      }
    }
    await this.#loop;
  }

  /** Removes the socket file (idempotent); `egress stop` waits for this. */
  async remove(): Promise<void> {
    if (this.#removed) return;
    this.#removed = true;
    try {
      await Deno.remove(this.path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}

type RequestLine = { kind: "line"; text: string } | { kind: "too_long" } | { kind: "timeout" };

/** Reads up to the first newline (or EOF), at most MAX_REQUEST_BYTES, within `timeoutMs`. */
export async function readRequestLine(conn: Deno.Conn, timeoutMs: number): Promise<RequestLine> {
  const buffer = new Uint8Array(MAX_REQUEST_BYTES + 1);
  let length = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    for (;;) {
      const read = conn.read(buffer.subarray(length));
      const n = await Promise.race([read, timeout]);
      if (n === "timeout") {
        read.catch(() => {});
        return { kind: "timeout" };
      }
      if (n === null) break;
      const newline = buffer.subarray(length, length + n).indexOf(10);
      length += n;
      if (newline >= 0) {
        length = length - n + newline;
        if (length > MAX_REQUEST_BYTES) return { kind: "too_long" };
        break;
      }
      if (length > MAX_REQUEST_BYTES) return { kind: "too_long" };
    }
    return { kind: "line", text: new TextDecoder().decode(buffer.subarray(0, length)).replace(/\r$/, "") };
  } finally {
    clearTimeout(timer);
  }
}

/** Reads and discards until EOF, at most `ms` milliseconds and 64 KiB. */
async function drain(conn: Deno.Conn, ms: number): Promise<void> {
  const buffer = new Uint8Array(4096);
  const deadline = Date.now() + ms;
  let total = 0;
  while (total < 65536 && Date.now() < deadline) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const read = conn.read(buffer);
    const n = await Promise.race([
      read,
      new Promise<"late">((
        resolve,
      ) => (timer = setTimeout(() => resolve("late"), Math.max(1, deadline - Date.now())))),
    ]).catch(() => null);
    clearTimeout(timer);
    if (n === "late") {
      read.catch(() => {});
      return;
    }
    if (n === null) return;
    total += n;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}
