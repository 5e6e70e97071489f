// Control socket server with peer-credential authentication (runner.md §5). Deno's Unix sockets
// expose no peer credentials, so this server drives libc directly: socket/bind/listen/accept4,
// getsockopt(SO_PEERCRED) for the caller's pid/uid/gid, non-blocking recv/send, and one poll() on a
// worker thread over the listener, every waiting client and an eventfd that close() uses to wake it.
// A client that sends nothing is dropped after the request timeout without delaying anyone else.

import {
  AF_UNIX,
  closeFd,
  EAGAIN,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINTR,
  errno,
  libc,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  OsError,
  POLLERR,
  POLLHUP,
  POLLIN,
  SHUT_WR,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
} from "../../ffi/libc.ts";
import type { TrustedContext } from "../proc/github_context.ts";
import { errorLine, MAX_REQUEST_BYTES, parseRequest, REQUEST_TIMEOUT_MS } from "./protocol.ts";

export type PeerCredentials = { pid: number; uid: number; gid: number };

/** What a command handler returns: the reply line, and what to do once it has been sent. */
export type PeerAnswer = { reply: string; afterReply?: () => void };

/** Called only for authorized requests; `args` no longer hold the control token. */
export type PeerHandler = (
  command: string,
  args: string[],
  peer: PeerCredentials,
) => Promise<PeerAnswer> | PeerAnswer;

/** Who may send which command. */
export type AuthenticationPolicy = {
  /** runner mode: non-root callers may qualify through their trusted context and the token */
  runner: boolean;
  /** egress's own `GITHUB_ACTION_REPOSITORY`, captured at start */
  actionRepository?: string;
  /** the control token (written root-only by the daemon, handed to the action's steps) */
  token?: string;
  /** trusted context of a pid (runner.md §4); injectable for tests */
  contextOf: (pid: number) => TrustedContext;
};

/** Commands any local caller may send. */
export const UNAUTHENTICATED_COMMANDS: readonly string[] = ["status"];

export type Authorization =
  | { ok: true; args: string[]; via: string }
  | { ok: false; reason: string };

/** Constant-time comparison, so the token cannot be guessed byte by byte from timing. */
function sameSecret(a: string, b: string): boolean {
  const left = new TextEncoder().encode(a);
  const right = new TextEncoder().encode(b);
  if (left.length !== right.length) return false;
  let difference = 0;
  for (let i = 0; i < left.length; i++) difference |= left[i] ^ right[i];
  return difference === 0;
}

/**
 * The authentication rule of runner.md §5: `status` passes; uid 0 passes (a token, if sent, is
 * dropped); otherwise only in runner mode, with a trusted `action` equal to egress's own action
 * repository AND the control token as the first argument.
 */
export function authorize(
  command: string,
  args: readonly string[],
  peer: PeerCredentials,
  policy: AuthenticationPolicy,
): Authorization {
  const tokenGiven = args.length > 0 && policy.token !== undefined && sameSecret(args[0], policy.token);
  const rest = tokenGiven ? args.slice(1) : [...args];
  if (UNAUTHENTICATED_COMMANDS.includes(command)) return { ok: true, args: rest, via: "open command" };
  if (peer.uid === 0) return { ok: true, args: rest, via: "root" };
  if (!policy.runner) return { ok: false, reason: `uid ${peer.uid} is not root` };
  if (!policy.actionRepository) {
    return { ok: false, reason: "egress was started without GITHUB_ACTION_REPOSITORY" };
  }
  const context = policy.contextOf(peer.pid);
  if (!context.action) return { ok: false, reason: `pid ${peer.pid} has no trusted action context` };
  if (context.action !== policy.actionRepository) {
    return { ok: false, reason: `action ${context.action} is not ${policy.actionRepository}` };
  }
  if (args.length === 0) return { ok: false, reason: "missing control token" };
  if (!tokenGiven) return { ok: false, reason: "wrong control token" };
  return { ok: true, args: rest, via: `action ${context.action}` };
}

export type PeerServerOptions = {
  path: string;
  handler: PeerHandler;
  authentication: AuthenticationPolicy;
  /** Operational log sink for callers and failures. */
  log?: (level: "info" | "warn" | "error", message: string) => void;
  requestTimeoutMs?: number;
  /** File mode of the socket (runner mode: 0o666, authentication does the gating). */
  mode?: number;
};

type Client = {
  fd: number;
  peer: PeerCredentials;
  received: Uint8Array;
  length: number;
  deadline: number;
  busy: boolean;
};

const SOCKADDR_UN_SIZE = 110;
const LISTEN_BACKLOG = 32;
const MAX_CLIENTS = 64;

function socketAddress(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= SOCKADDR_UN_SIZE - 2) throw new Error(`Cannot bind ${path}: the path is too long`);
  const address = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(bytes, 2);
  return address;
}

/** SO_PEERCRED of a connected Unix socket: struct ucred { pid_t pid; uid_t uid; gid_t gid; }. */
export function peerCredentials(fd: number): PeerCredentials {
  const ucred = new Uint8Array(12);
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, 12, true);
  if (libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucred, length) !== 0) {
    throw new OsError("read the control client's credentials (SO_PEERCRED)", errno());
  }
  const view = new DataView(ucred.buffer);
  return { pid: view.getInt32(0, true), uid: view.getUint32(4, true), gid: view.getUint32(8, true) };
}

export class PeerControlServer {
  readonly path: string;
  readonly #options: PeerServerOptions;
  readonly #listenFd: number;
  readonly #wakeFd: number;
  readonly #clients = new Map<number, Client>();
  #closed = false;
  #removed = false;
  #loop: Promise<void> = Promise.resolve();

  private constructor(options: PeerServerOptions, listenFd: number, wakeFd: number) {
    this.path = options.path;
    this.#options = options;
    this.#listenFd = listenFd;
    this.#wakeFd = wakeFd;
  }

  /**
   * Binds under a temporary name, sets the mode, then renames into place, so no client can connect
   * to a socket whose mode is not final yet. An existing file at `path` is replaced.
   */
  static async listen(options: PeerServerOptions): Promise<PeerControlServer> {
    const lib = libc();
    const temporary = `${options.path}.${Deno.pid}.tmp`;
    await Deno.remove(temporary).catch(() => {});
    const fd = lib.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new OsError(`open control socket ${options.path}`, errno());
    let wakeFd = -1;
    try {
      const address = socketAddress(temporary);
      if (lib.bind(fd, address, SOCKADDR_UN_SIZE) !== 0) {
        throw new OsError(`bind control socket ${temporary}`, errno());
      }
      await Deno.chmod(temporary, options.mode ?? 0o600);
      if (Deno.uid() === 0) await Deno.chown(temporary, 0, 0);
      if (lib.listen(fd, LISTEN_BACKLOG) !== 0) throw new OsError(`listen on ${temporary}`, errno());
      wakeFd = lib.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (wakeFd < 0) throw new OsError("create the control socket wake-up eventfd", errno());
      await Deno.rename(temporary, options.path);
    } catch (error) {
      closeFd(fd);
      closeFd(wakeFd);
      await Deno.remove(temporary).catch(() => {});
      const message = (error as Error).message;
      throw new Error(
        message.startsWith("Cannot") ? message : `Cannot open control socket ${options.path}: ${message}`,
      );
    }
    const server = new PeerControlServer(options, fd, wakeFd);
    server.#loop = server.#run();
    return server;
  }

  get #timeoutMs(): number {
    return this.#options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  }

  async #run(): Promise<void> {
    const lib = libc();
    while (!this.#closed) {
      const waiting = [...this.#clients.values()].filter((client) => !client.busy);
      const fds = [this.#wakeFd, this.#listenFd, ...waiting.map((client) => client.fd)];
      const pollFds = new Uint8Array(8 * fds.length);
      const view = new DataView(pollFds.buffer);
      fds.forEach((fd, i) => {
        view.setInt32(8 * i, fd, true);
        view.setInt16(8 * i + 4, POLLIN, true);
      });
      const now = Date.now();
      const nextDeadline = waiting.reduce((soonest, client) => Math.min(soonest, client.deadline), Infinity);
      const timeout = nextDeadline === Infinity ? -1 : Math.max(0, nextDeadline - now);
      const ready = await lib.poll_async(pollFds, BigInt(fds.length), timeout);
      if (this.#closed) break;
      if (ready < 0) {
        const code = errno();
        if (code === EINTR) continue;
        this.#log("error", `control socket: poll failed: ${new OsError("poll", code).message}`);
        break;
      }
      if (view.getInt16(6 + 8 * 1, true) & POLLIN) this.#acceptAll();
      waiting.forEach((client, i) => {
        const revents = view.getInt16(8 * (i + 2) + 6, true);
        if (revents & (POLLIN | POLLHUP | POLLERR)) this.#receive(client);
      });
      const late = Date.now();
      for (const client of waiting) {
        if (!client.busy && this.#clients.has(client.fd) && late >= client.deadline) {
          this.#log(
            "warn",
            `control socket: dropped pid ${client.peer.pid} uid ${client.peer.uid}: no request within ${this.#timeoutMs} ms`,
          );
          this.#finish(client, errorLine("request timed out"));
        }
      }
    }
  }

  #acceptAll(): void {
    const lib = libc();
    for (;;) {
      const fd = lib.accept4(this.#listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const code = errno();
        if (code !== EAGAIN && code !== EINTR) {
          this.#log("warn", `control socket: ${new OsError("accept a client", code).message}`);
        }
        return;
      }
      let peer: PeerCredentials;
      try {
        peer = peerCredentials(fd);
      } catch (error) {
        this.#log("warn", `control socket: ${(error as Error).message}`);
        closeFd(fd);
        continue;
      }
      if (this.#clients.size >= MAX_CLIENTS) {
        // Full of clients that said nothing yet: drop the one waiting longest, not the newcomer, so
        // a flood of silent connections cannot lock post's shutdown out (legitimate clients send
        // their line at once).
        const oldest = [...this.#clients.values()].filter((client) => !client.busy)
          .reduce<Client | undefined>(
            (a, b) => (a === undefined || b.deadline < a.deadline ? b : a),
            undefined,
          );
        if (oldest === undefined) {
          this.#log("warn", `control socket: refused pid ${peer.pid} uid ${peer.uid}: too many clients`);
          this.#send(fd, errorLine("busy"));
          this.#closeClientFd(fd);
          continue;
        }
        this.#finish(oldest, errorLine("busy"), "too many clients, dropped the longest waiting");
      }
      this.#clients.set(fd, {
        fd,
        peer,
        received: new Uint8Array(MAX_REQUEST_BYTES + 1),
        length: 0,
        deadline: Date.now() + this.#timeoutMs,
        busy: false,
      });
    }
  }

  #receive(client: Client): void {
    const lib = libc();
    for (;;) {
      const room = client.received.subarray(client.length);
      if (room.length === 0) return this.#finish(client, errorLine("request too long"), "request too long");
      const n = Number(lib.recv(client.fd, room, BigInt(room.length), MSG_DONTWAIT));
      if (n < 0) {
        const code = errno();
        if (code === EAGAIN || code === EINTR) return;
        return this.#drop(client, new OsError("read a control request", code).message);
      }
      if (n === 0) return this.#dispatch(client, client.length); // EOF ends the line too
      const newline = room.subarray(0, n).indexOf(10);
      client.length += n;
      if (newline >= 0) return this.#dispatch(client, client.length - n + newline);
      if (client.length > MAX_REQUEST_BYTES) {
        return this.#finish(client, errorLine("request too long"), "request too long");
      }
    }
  }

  #dispatch(client: Client, lineLength: number): void {
    if (lineLength > MAX_REQUEST_BYTES) {
      return this.#finish(client, errorLine("request too long"), "request too long");
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(client.received.subarray(0, lineLength));
    } catch {
      return this.#finish(client, errorLine("request is not UTF-8"), "request is not UTF-8");
    }
    const { command, args } = parseRequest(text.replace(/\r$/, ""));
    const who = `pid ${client.peer.pid} uid ${client.peer.uid}`;
    const verdict = authorize(command, args, client.peer, this.#options.authentication);
    if (!verdict.ok) {
      this.#log("warn", `control socket: refused ${JSON.stringify(command)} from ${who}: ${verdict.reason}`);
      return this.#finish(client, errorLine(`unauthorized (${verdict.reason})`));
    }
    this.#log("info", `control socket: ${JSON.stringify(command)} from ${who} (${verdict.via})`);
    client.busy = true;
    (async () => {
      try {
        const answer = await this.#options.handler(command, verdict.args, client.peer);
        this.#finish(client, answer.reply);
        answer.afterReply?.();
      } catch (error) {
        const message = (error as Error).message;
        this.#log("error", `control socket: command ${JSON.stringify(command)} failed: ${message}`);
        this.#finish(client, errorLine(`internal error: ${message}`));
      }
    })();
  }

  /** Replies one line and closes; `note` is logged when the request itself was refused. */
  #finish(client: Client, reply: string, note?: string): void {
    if (!this.#clients.has(client.fd)) return;
    if (note) {
      this.#log("warn", `control socket: refused pid ${client.peer.pid} uid ${client.peer.uid}: ${note}`);
    }
    this.#send(client.fd, reply);
    this.#clients.delete(client.fd);
    this.#closeClientFd(client.fd);
  }

  #drop(client: Client, reason: string): void {
    this.#log("warn", `control socket: client pid ${client.peer.pid} failed: ${reason}`);
    this.#clients.delete(client.fd);
    closeFd(client.fd);
  }

  /** A reply is one short line: it fits the socket buffer, so a non-blocking send suffices. */
  #send(fd: number, reply: string): void {
    const bytes = new TextEncoder().encode(reply.replace(/\n/g, " ") + "\n");
    let offset = 0;
    while (offset < bytes.length) {
      const rest = bytes.subarray(offset);
      const n = Number(libc().send(fd, rest, BigInt(rest.length), MSG_DONTWAIT | MSG_NOSIGNAL));
      if (n < 0) {
        if (errno() === EINTR) continue;
        return; // client gone or not reading: nothing more to do for it
      }
      offset += n;
    }
  }

  /** Unread request bytes would turn close() into a reset that can destroy the reply. */
  #closeClientFd(fd: number): void {
    const lib = libc();
    lib.shutdown(fd, SHUT_WR);
    const scratch = new Uint8Array(4096);
    for (let total = 0; total < 65536;) {
      const n = Number(lib.recv(fd, scratch, BigInt(scratch.length), MSG_DONTWAIT));
      if (n <= 0) break;
      total += n;
    }
    closeFd(fd);
  }

  #log(level: "info" | "warn" | "error", message: string): void {
    this.#options.log?.(level, message);
  }

  /** Stops accepting (new clients get ECONNREFUSED); the socket file stays until remove(). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const one = new Uint8Array(8);
    new DataView(one.buffer).setBigUint64(0, 1n, true);
    libc().write(this.#wakeFd, one, 8n);
    await this.#loop;
    for (const client of this.#clients.values()) closeFd(client.fd);
    this.#clients.clear();
    closeFd(this.#listenFd);
    closeFd(this.#wakeFd);
  }

  /** Removes the socket file (idempotent). */
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

/** A fresh random control token (48 hex digits). */
export function generateControlToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Writes the token root-only (0600) before anything can ask for it. */
export async function writeControlToken(path: string, token: string): Promise<void> {
  await Deno.writeTextFile(path, token + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600);
}
