import assert from "node:assert/strict";
import fc from "fast-check";
import { FlowLogLimiter, type FlowTuple } from "../../src/udp/flow_table.ts";

function clock(start = 1_000_000) {
  let time = start;
  return { now: () => time, advance: (ms: number) => (time += ms) };
}

const flowA: FlowTuple = {
  protocol: 17,
  srcAddr: 0x0a000001,
  srcPort: 40000,
  dstAddr: 0x08080808,
  dstPort: 443,
};

Deno.test("flow limiter: a flow is logged at most once per interval", () => {
  const time = clock();
  const limiter = new FlowLogLimiter({ now: time.now });
  assert.equal(limiter.shouldLog(flowA), true);
  assert.equal(limiter.suppressedBeforeLast, 0);
  assert.equal(limiter.shouldLog(flowA), false);
  time.advance(59_999);
  assert.equal(limiter.shouldLog(flowA), false);
  time.advance(1);
  assert.equal(limiter.shouldLog(flowA), true);
  assert.equal(limiter.suppressedBeforeLast, 2, "two events were suppressed in between");
  assert.equal(limiter.shouldLog(flowA), false);
});

Deno.test("flow limiter: each field of the 5-tuple makes a distinct flow", () => {
  const limiter = new FlowLogLimiter({ now: clock().now });
  assert.equal(limiter.shouldLog(flowA), true);
  const variants: FlowTuple[] = [
    { ...flowA, protocol: 6 },
    { ...flowA, srcAddr: 0x0a000002 },
    { ...flowA, srcPort: 40001 },
    { ...flowA, dstAddr: 0x08080404 },
    { ...flowA, dstPort: 53 },
  ];
  for (const variant of variants) assert.equal(limiter.shouldLog(variant), true, JSON.stringify(variant));
  for (const variant of variants) assert.equal(limiter.shouldLog(variant), false, JSON.stringify(variant));
  assert.equal(limiter.size, 6);
});

Deno.test("flow limiter: bounded, evicts the least recently seen flow", () => {
  const limiter = new FlowLogLimiter({ now: clock().now, capacity: 3 });
  for (const key of ["a", "b", "c"]) assert.equal(limiter.shouldLogKey(key), true);
  assert.equal(limiter.shouldLogKey("a"), false); // a is now the most recent; b the oldest
  assert.equal(limiter.shouldLogKey("d"), true); // evicts b
  assert.equal(limiter.size, 3);
  assert.equal(limiter.shouldLogKey("a"), false, "a survived");
  assert.equal(limiter.shouldLogKey("c"), false, "c survived");
  assert.equal(limiter.shouldLogKey("b"), true, "b was forgotten, so it is logged again");
  assert.equal(limiter.size, 3);
});

Deno.test("flow limiter: a clock stepping backwards does not silence a flow", () => {
  const time = clock();
  const limiter = new FlowLogLimiter({ now: time.now, intervalMs: 1000 });
  assert.equal(limiter.shouldLogKey("k"), true);
  time.advance(-5000);
  assert.equal(limiter.shouldLogKey("k"), true);
  assert.equal(limiter.shouldLogKey("k"), false);
});

Deno.test("flow limiter: rejects bad options with a clear error", () => {
  assert.throws(() => new FlowLogLimiter({ intervalMs: 0 }), /Cannot create a flow log limiter: intervalMs/);
  assert.throws(() => new FlowLogLimiter({ capacity: 1.5 }), /capacity must be a positive integer/);
});

Deno.test("flow limiter: matches a simple model (property)", () => {
  // Model without eviction (capacity larger than the key space): log iff never logged or
  // at least `interval` since the last logged event of that key.
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom("a", "b", "c", "d"), fc.integer({ min: 0, max: 50 })), {
        maxLength: 200,
      }),
      (events) => {
        const time = clock(0);
        const limiter = new FlowLogLimiter({ now: time.now, intervalMs: 60, capacity: 10 });
        const lastLogged = new Map<string, number>();
        for (const [key, step] of events) {
          const now = time.advance(step);
          const last = lastLogged.get(key);
          const expected = last === undefined || now - last >= 60;
          if (expected) lastLogged.set(key, now);
          assert.equal(limiter.shouldLogKey(key), expected);
        }
        assert.ok(limiter.size <= 4);
      },
    ),
    { numRuns: 200 },
  );
});
