// Container image of a process running in a Docker container: `GET /containers/<id>/json` on the
// Docker Engine API Unix socket, HTTP/1.1 written by hand (no fetch over Unix sockets in Deno
// without unstable APIs), `Config.Image`. Successes are cached per id (bounded LRU), failures for
// 30 s so a dead daemon does not cost 2 s per connection.

import { containerIdFromCgroup } from "./parse.ts";

export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
const CONTAINER_ID = /^[0-9a-f]{64}$/;

export type DockerOptions = {
  socketPath?: string;
  /** Whole request (connect, write, read) bound, default 2000 ms. */
  timeoutMs?: number;
  /** Successful answers kept, default 1024 ids. */
  cacheSize?: number;
  /** How long a failure is remembered, default 30 000 ms. */
  failureTtlMs?: number;
  /** Clock, for tests. */
  now?: () => number;
};

export type HttpResponse = { status: number; headers: Map<string, string>; body: Uint8Array };

function indexOfSequence(data: Uint8Array, sequence: number[], from = 0): number {
  outer: for (let i = from; i + sequence.length <= data.length; i++) {
    for (let j = 0; j < sequence.length; j++) if (data[i + j] !== sequence[j]) continue outer;
    return i;
  }
  return -1;
}

const CRLF = [13, 10];
const CRLFCRLF = [13, 10, 13, 10];

/** Parses a complete HTTP/1.1 response (read until EOF). Throws "Cannot parse Docker API response: …". */
export function parseHttpResponse(data: Uint8Array): HttpResponse {
  const fail = (why: string): never => {
    throw new Error(`Cannot parse Docker API response: ${why}`);
  };
  const headEnd = indexOfSequence(data, CRLFCRLF);
  if (headEnd < 0) fail("no end of headers");
  const head = new TextDecoder().decode(data.subarray(0, headEnd)).split("\r\n");
  const statusLine = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(head[0]);
  if (!statusLine) fail(`bad status line ${JSON.stringify(head[0].slice(0, 60))}`);
  const headers = new Map<string, string>();
  for (const line of head.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) fail(`bad header line ${JSON.stringify(line.slice(0, 60))}`);
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  let body = data.subarray(headEnd + 4);
  if (headers.get("transfer-encoding")?.toLowerCase().includes("chunked")) {
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (;;) {
      const lineEnd = indexOfSequence(body, CRLF, offset);
      if (lineEnd < 0) fail("truncated chunk size");
      const sizeText = new TextDecoder().decode(body.subarray(offset, lineEnd)).split(";")[0].trim();
      if (!/^[0-9a-fA-F]+$/.test(sizeText)) fail("bad chunk size");
      const size = parseInt(sizeText, 16);
      offset = lineEnd + 2;
      if (size === 0) break;
      if (offset + size > body.length) fail("truncated chunk");
      parts.push(body.subarray(offset, offset + size));
      offset += size + 2;
    }
    const total = parts.reduce((n, p) => n + p.length, 0);
    const joined = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      joined.set(part, at);
      at += part.length;
    }
    body = joined;
  } else if (headers.has("content-length")) {
    const length = Number(headers.get("content-length"));
    if (!Number.isInteger(length) || length < 0) fail("bad Content-Length");
    if (body.length < length) fail("truncated body");
    body = body.subarray(0, length);
  }
  return { status: Number(statusLine![1]), headers, body };
}

/** Image name from a `/containers/<id>/json` body; throws when absent. */
export function imageFromInspect(body: Uint8Array): string {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new Error("Cannot read container image: the Docker API answered with invalid JSON");
  }
  const image = (json as { Config?: { Image?: unknown } })?.Config?.Image;
  if (typeof image !== "string" || image === "") {
    throw new Error("Cannot read container image: Config.Image is missing");
  }
  return image;
}

type Failure = { reason: string; until: number };

export class DockerImageResolver {
  readonly socketPath: string;
  readonly #timeoutMs: number;
  readonly #cacheSize: number;
  readonly #failureTtlMs: number;
  readonly #now: () => number;
  readonly #images = new Map<string, string>(); // insertion order = LRU order
  readonly #failures = new Map<string, Failure>();
  readonly #inFlight = new Map<string, Promise<string | undefined>>();
  /** Last failure reason per id, for logs and tests. */
  lastFailure: string | undefined;

  constructor(options: DockerOptions = {}) {
    this.socketPath = options.socketPath ?? DEFAULT_DOCKER_SOCKET;
    this.#timeoutMs = options.timeoutMs ?? 2000;
    this.#cacheSize = options.cacheSize ?? 1024;
    this.#failureTtlMs = options.failureTtlMs ?? 30_000;
    this.#now = options.now ?? Date.now;
  }

  /** Image for a process's cgroup path, undefined when it is not a container or on any failure. */
  imageForCgroup(cgroup: string | undefined): Promise<string | undefined> {
    const id = containerIdFromCgroup(cgroup);
    return id ? this.imageForContainer(id) : Promise.resolve(undefined);
  }

  /** Never throws; concurrent asks for one id share one request. */
  imageForContainer(id: string): Promise<string | undefined> {
    if (!CONTAINER_ID.test(id)) return Promise.resolve(undefined);
    const cached = this.#images.get(id);
    if (cached !== undefined) {
      this.#images.delete(id);
      this.#images.set(id, cached);
      return Promise.resolve(cached);
    }
    const failure = this.#failures.get(id);
    if (failure) {
      if (failure.until > this.#now()) return Promise.resolve(undefined);
      this.#failures.delete(id);
    }
    const pending = this.#inFlight.get(id);
    if (pending) return pending;
    const request = this.#fetch(id).then(
      (image) => {
        this.#images.set(id, image);
        while (this.#images.size > this.#cacheSize) this.#images.delete(this.#images.keys().next().value!);
        return image;
      },
      (error: Error) => {
        this.lastFailure = error.message;
        this.#failures.set(id, { reason: error.message, until: this.#now() + this.#failureTtlMs });
        // Failures are bounded too: expired ones are dropped first, then the oldest.
        if (this.#failures.size > this.#cacheSize) {
          const now = this.#now();
          for (const [key, value] of this.#failures) if (value.until <= now) this.#failures.delete(key);
          while (this.#failures.size > this.#cacheSize) {
            this.#failures.delete(this.#failures.keys().next().value!);
          }
        }
        return undefined;
      },
    ).finally(() => this.#inFlight.delete(id));
    this.#inFlight.set(id, request);
    return request;
  }

  async #fetch(id: string): Promise<string> {
    let conn: Deno.UnixConn | undefined;
    let timedOut = false;
    let expire: (error: Error) => void = () => {};
    const expired = new Promise<never>((_, reject) => expire = reject);
    expired.catch(() => undefined);
    // On timeout the connection is closed, which makes a pending read or write reject.
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        conn?.close();
      } catch { /* already closed */ }
      expire(new Error("timeout"));
    }, this.#timeoutMs);
    try {
      const connecting = Deno.connect({ transport: "unix", path: this.socketPath });
      connecting.then((late) => {
        if (timedOut) late.close();
      }, () => undefined);
      conn = await Promise.race([connecting, expired]);
      const request = new TextEncoder().encode(
        `GET /containers/${id}/json HTTP/1.1\r\nHost: docker\r\nUser-Agent: egress\r\n` +
          `Accept: application/json\r\nConnection: close\r\n\r\n`,
      );
      for (let written = 0; written < request.length;) written += await conn.write(request.subarray(written));
      const chunks: Uint8Array[] = [];
      let total = 0;
      const buffer = new Uint8Array(16384);
      for (;;) {
        const n = await Promise.race([conn.read(buffer), expired]);
        if (n === null) break;
        total += n;
        if (total > MAX_RESPONSE_BYTES) throw new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`);
        chunks.push(buffer.slice(0, n));
      }
      const data = new Uint8Array(total);
      let at = 0;
      for (const chunk of chunks) {
        data.set(chunk, at);
        at += chunk.length;
      }
      const response = parseHttpResponse(data);
      if (response.status !== 200) throw new Error(`the Docker API answered ${response.status}`);
      return imageFromInspect(response.body);
    } catch (error) {
      if (timedOut) {
        throw new Error(
          `Cannot read container image of ${id.slice(0, 12)}: no answer within ${this.#timeoutMs} ms`,
        );
      }
      const message = (error as Error).message;
      throw new Error(
        message.startsWith("Cannot ")
          ? message
          : `Cannot read container image of ${id.slice(0, 12)} from ${this.socketPath}: ${message}`,
      );
    } finally {
      clearTimeout(timer);
      if (!timedOut) {
        try {
          conn?.close();
        } catch { /* already closed */ }
      }
    }
  }
}
