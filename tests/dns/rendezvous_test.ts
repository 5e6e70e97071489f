import assert from "node:assert/strict";
import { Rendezvous, type RendezvousKey } from "../../src/dns/rendezvous.ts";

function key(overrides: Partial<RendezvousKey> = {}): RendezvousKey {
  return {
    scope: "netns",
    clientIp: "127.0.0.1",
    clientPort: 40000,
    id: 0x1234,
    name: "a.example.com",
    ...overrides,
  };
}

function entry(overrides: Partial<RendezvousKey> & { resolverIp?: string; pid?: number } = {}) {
  const { resolverIp = "8.8.8.8", pid, ...rest } = overrides;
  return { ...key(rest), resolverIp, resolverPort: 53, process: pid ? { pid } : undefined };
}

Deno.test("rendezvous: take returns the recorded entry once", () => {
  const table = new Rendezvous();
  table.record(entry({ pid: 7 }));
  assert.equal(table.size, 1);
  const found = table.take(key());
  assert.equal(found?.resolverIp, "8.8.8.8");
  assert.equal(found?.process?.pid, 7);
  assert.equal(table.take(key()), undefined);
  assert.equal(table.size, 0);
});

Deno.test("rendezvous: colliding ids from two clients, ports or scopes stay apart", () => {
  const table = new Rendezvous();
  table.record(entry({ clientPort: 40000, resolverIp: "1.1.1.1", pid: 1 }));
  table.record(entry({ clientPort: 40001, resolverIp: "9.9.9.9", pid: 2 }));
  table.record(entry({ clientIp: "172.17.0.2", scope: "source", resolverIp: "8.8.4.4", pid: 3 }));
  table.record(entry({ scope: "source", resolverIp: "8.8.8.8", pid: 4 }));
  assert.equal(table.take(key({ clientPort: 40001 }))?.process?.pid, 2);
  assert.equal(table.take(key({ clientIp: "172.17.0.2", scope: "source" }))?.process?.pid, 3);
  assert.equal(table.take(key())?.process?.pid, 1);
  assert.equal(table.take(key({ scope: "source" }))?.process?.pid, 4);
  assert.equal(table.size, 0);
});

Deno.test("rendezvous: another question name does not match", () => {
  const table = new Rendezvous();
  table.record(entry());
  assert.equal(table.take(key({ name: "b.example.com" })), undefined);
  assert.equal(table.take(key({ id: 0x1235 })), undefined);
  assert.ok(table.take(key()));
});

Deno.test("rendezvous: same key queues in arrival order", () => {
  const table = new Rendezvous();
  table.record(entry({ resolverIp: "1.1.1.1" }));
  table.record(entry({ resolverIp: "9.9.9.9" }));
  assert.equal(table.peek(key())?.resolverIp, "1.1.1.1");
  assert.equal(table.take(key())?.resolverIp, "1.1.1.1");
  assert.equal(table.take(key())?.resolverIp, "9.9.9.9");
});

Deno.test("rendezvous: entries expire", () => {
  let now = 1000;
  const table = new Rendezvous({ maxAgeMs: 500, now: () => now });
  table.record(entry({ resolverIp: "1.1.1.1" }));
  now = 1400;
  table.record(entry({ resolverIp: "9.9.9.9" }));
  now = 1600;
  // The first is too old and skipped; the second is still live.
  assert.equal(table.take(key())?.resolverIp, "9.9.9.9");
  table.record(entry({ clientPort: 1 }));
  now = 2200;
  assert.equal(table.take(key({ clientPort: 1 })), undefined);
  table.record(entry({ clientPort: 2 }));
  now = 2800;
  assert.equal(table.sweep(), 1);
  assert.equal(table.size, 0);
});

Deno.test("rendezvous: bounded, the oldest go first", () => {
  const table = new Rendezvous({ maxEntries: 3 });
  for (let port = 1; port <= 5; port++) table.record(entry({ clientPort: port }));
  assert.equal(table.size, 3);
  assert.equal(table.take(key({ clientPort: 1 })), undefined);
  assert.equal(table.take(key({ clientPort: 2 })), undefined);
  for (let port = 3; port <= 5; port++) assert.ok(table.take(key({ clientPort: port })), `port ${port}`);
  // One busy key cannot grow past the bound either.
  for (let i = 0; i < 10; i++) table.record(entry());
  assert.equal(table.size, 3);
});

Deno.test("rendezvous: bad options are rejected", () => {
  assert.throws(() => new Rendezvous({ maxEntries: 0 }), /Cannot create Rendezvous/);
  assert.throws(() => new Rendezvous({ maxAgeMs: -1 }), /Cannot create Rendezvous/);
});
