// Container image lookup against a fake Docker Engine API on a temp Unix socket.

import assert from "node:assert/strict";
import { DockerImageResolver, imageFromInspect, parseHttpResponse } from "../../src/proc/docker.ts";

const id = (c: string) => c.repeat(64);
const OK_CHUNKED = id("a"),
  OK_LENGTH = id("b"),
  MISSING = id("c"),
  SLOW = id("d"),
  GARBAGE = id("e"),
  NO_IMAGE = id("f");

type FakeDocker = { path: string; requests: string[]; close: () => Promise<void> };

function fakeDocker(): FakeDocker {
  const dir = Deno.makeTempDirSync({ prefix: "egress-docker-" });
  const path = `${dir}/docker.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const requests: string[] = [];
  const conns = new Set<Deno.Conn>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const encoder = new TextEncoder();
  const serve = async (conn: Deno.Conn) => {
    conns.add(conn);
    try {
      let head = "";
      const buffer = new Uint8Array(4096);
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buffer);
        if (n === null) return;
        head += new TextDecoder().decode(buffer.subarray(0, n));
      }
      const requestLine = head.split("\r\n")[0];
      requests.push(requestLine);
      const target = requestLine.split(" ")[1] ?? "";
      let reply: string;
      if (target === `/containers/${OK_CHUNKED}/json`) {
        const body = JSON.stringify({ Id: OK_CHUNKED, Config: { Image: "node:20-alpine", Env: ["X=1"] } });
        const half = Math.floor(body.length / 2);
        reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
          `${half.toString(16)}\r\n${body.slice(0, half)}\r\n${(body.length - half).toString(16)}\r\n${
            body.slice(half)
          }\r\n0\r\n\r\n`;
      } else if (target === `/containers/${OK_LENGTH}/json`) {
        const body = JSON.stringify({ Config: { Image: "ghcr.io/org/tool@sha256:" + "0".repeat(64) } });
        reply = `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      } else if (target === `/containers/${SLOW}/json`) {
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, 3000);
          timers.add(timer);
        });
        reply = 'HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{"Config":{"Image":"late"}}';
      } else if (target === `/containers/${GARBAGE}/json`) {
        reply = "this is not HTTP at all\r\n\r\n";
      } else if (target === `/containers/${NO_IMAGE}/json`) {
        reply = 'HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{"Config":{}}';
      } else {
        const body = '{"message":"No such container"}';
        reply = `HTTP/1.1 404 Not Found\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      }
      const bytes = encoder.encode(reply);
      for (let w = 0; w < bytes.length;) w += await conn.write(bytes.subarray(w));
    } catch {
      // client went away (timeout test)
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const loop = (async () => {
    try {
      for await (const conn of listener) serve(conn);
    } catch { /* listener closed */ }
  })();
  return {
    path,
    requests,
    close: async () => {
      listener.close();
      for (const timer of timers) clearTimeout(timer);
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      await loop;
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

Deno.test("docker: image from chunked and Content-Length answers; successes cached", async () => {
  const docker = fakeDocker();
  try {
    const resolver = new DockerImageResolver({ socketPath: docker.path });
    assert.equal(await resolver.imageForCgroup(`/system.slice/docker-${OK_CHUNKED}.scope`), "node:20-alpine");
    assert.equal(
      await resolver.imageForCgroup(`/docker/${OK_LENGTH}`),
      "ghcr.io/org/tool@sha256:" + "0".repeat(64),
    );
    assert.equal(await resolver.imageForContainer(OK_CHUNKED), "node:20-alpine");
    assert.deepEqual(docker.requests, [
      `GET /containers/${OK_CHUNKED}/json HTTP/1.1`,
      `GET /containers/${OK_LENGTH}/json HTTP/1.1`,
    ]);
    // Not a container cgroup: no request at all.
    assert.equal(await resolver.imageForCgroup("/user.slice/session-1.scope"), undefined);
    assert.equal(docker.requests.length, 2);
  } finally {
    await docker.close();
  }
});

Deno.test("docker: 404, garbage and missing Config.Image ⇒ undefined, failure cached 30 s", async () => {
  const docker = fakeDocker();
  let clock = 1_000_000;
  try {
    const resolver = new DockerImageResolver({ socketPath: docker.path, now: () => clock });
    assert.equal(await resolver.imageForContainer(MISSING), undefined);
    assert.match(resolver.lastFailure!, /404/);
    assert.equal(await resolver.imageForContainer(GARBAGE), undefined);
    assert.match(resolver.lastFailure!, /Cannot parse Docker API response/);
    assert.equal(await resolver.imageForContainer(NO_IMAGE), undefined);
    assert.match(resolver.lastFailure!, /Config.Image/);
    assert.equal(docker.requests.length, 3);
    clock += 29_000;
    assert.equal(await resolver.imageForContainer(MISSING), undefined);
    assert.equal(docker.requests.length, 3, "a failure is remembered for 30 s");
    clock += 2_000;
    assert.equal(await resolver.imageForContainer(MISSING), undefined);
    assert.equal(docker.requests.length, 4, "and asked again after that");
  } finally {
    await docker.close();
  }
});

Deno.test("docker: a server slower than 2 s ⇒ undefined after about 2 s; concurrent asks share it", async () => {
  const docker = fakeDocker();
  try {
    const resolver = new DockerImageResolver({ socketPath: docker.path });
    const started = performance.now();
    const [a, b] = await Promise.all([resolver.imageForContainer(SLOW), resolver.imageForContainer(SLOW)]);
    const elapsed = performance.now() - started;
    assert.equal(a, undefined);
    assert.equal(b, undefined);
    assert.ok(elapsed >= 1900 && elapsed < 2900, `took ${Math.round(elapsed)} ms`);
    assert.match(resolver.lastFailure!, /no answer within 2000 ms/);
    assert.equal(docker.requests.length, 1);
  } finally {
    await docker.close();
  }
});

Deno.test("docker: no daemon (socket missing) ⇒ undefined with a reason", async () => {
  const resolver = new DockerImageResolver({ socketPath: "/nonexistent/egress-test/docker.sock" });
  assert.equal(await resolver.imageForContainer(OK_CHUNKED), undefined);
  assert.match(resolver.lastFailure!, /^Cannot read container image of aaaaaaaaaaaa from \/nonexistent/);
  assert.equal(await resolver.imageForContainer("not-an-id"), undefined);
});

Deno.test("docker: success cache is a bounded LRU", async () => {
  const docker = fakeDocker();
  try {
    const resolver = new DockerImageResolver({ socketPath: docker.path, cacheSize: 1 });
    await resolver.imageForContainer(OK_CHUNKED);
    await resolver.imageForContainer(OK_LENGTH); // evicts OK_CHUNKED
    await resolver.imageForContainer(OK_LENGTH);
    await resolver.imageForContainer(OK_CHUNKED);
    assert.equal(docker.requests.length, 3);
  } finally {
    await docker.close();
  }
});

Deno.test("docker: HTTP parsing edge cases", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.throws(
    () => parseHttpResponse(enc("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")),
    /truncated body/,
  );
  assert.throws(
    () => parseHttpResponse(enc("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")),
    /chunk size/,
  );
  assert.throws(() => parseHttpResponse(enc("HTTP/1.1 200 OK\r\n")), /no end of headers/);
  const r = parseHttpResponse(enc("HTTP/1.0 200 OK\r\nX: y\r\n\r\n{}"));
  assert.equal(r.status, 200);
  assert.equal(new TextDecoder().decode(r.body), "{}");
  assert.throws(() => imageFromInspect(enc("[")), /invalid JSON/);
  assert.equal(imageFromInspect(enc('{"Config":{"Image":"alpine"}}')), "alpine");
});
