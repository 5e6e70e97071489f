import assert from "node:assert/strict";
import { DnsCache } from "../../src/policy/dns_cache.ts";

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (seconds: number) => (now += seconds * 1000) };
}

Deno.test("every answer IP maps to the query name, lower-cased, trailing dot removed", () => {
  const cache = new DnsCache({ now: clock().now });
  cache.add("GitHub.COM.", ["140.82.112.3", "140.82.112.4"], 100);
  assert.equal(cache.lookup("140.82.112.3"), "github.com");
  assert.equal(cache.lookup("140.82.112.4"), "github.com");
  assert.equal(cache.lookup("1.1.1.1"), undefined);
  assert.deepEqual(cache.lookupAll("1.1.1.1"), []);
  assert.equal(cache.size, 2);
});

Deno.test("an IP keeps every name, most recent first; re-adding refreshes and makes it most recent", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now });
  cache.add("a.com", ["1.2.3.4"], 100);
  time.advance(1);
  cache.add("b.com", ["1.2.3.4"], 100);
  assert.deepEqual(cache.lookupAll("1.2.3.4"), ["b.com", "a.com"]);
  assert.equal(cache.lookup("1.2.3.4"), "b.com");
  time.advance(1);
  cache.add("a.com", ["1.2.3.4"], 100);
  assert.deepEqual(cache.lookupAll("1.2.3.4"), ["a.com", "b.com"]);
  assert.equal(cache.size, 2);
});

Deno.test("TTL is clamped to [60, 300] seconds", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now });
  cache.add("short.com", ["1.1.1.1"], 5);
  cache.add("long.com", ["2.2.2.2"], 86400);
  time.advance(59);
  assert.equal(cache.lookup("1.1.1.1"), "short.com");
  time.advance(1);
  assert.equal(cache.lookup("1.1.1.1"), undefined);
  time.advance(239);
  assert.equal(cache.lookup("2.2.2.2"), "long.com");
  time.advance(1);
  assert.equal(cache.lookup("2.2.2.2"), undefined);
  assert.equal(cache.size, 0);
});

Deno.test("custom minTtl/maxTtl, and a NaN TTL counts as the minimum", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now, minTtl: 1, maxTtl: 10 });
  cache.add("a.com", ["1.1.1.1"], 3);
  cache.add("b.com", ["2.2.2.2"], Number.NaN);
  time.advance(2);
  assert.equal(cache.lookup("1.1.1.1"), "a.com");
  assert.equal(cache.lookup("2.2.2.2"), undefined);
  time.advance(1);
  assert.equal(cache.lookup("1.1.1.1"), undefined);
});

Deno.test("refresh extends the lifetime", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now });
  cache.add("a.com", ["1.1.1.1"], 60);
  time.advance(50);
  cache.add("a.com", ["1.1.1.1"], 60);
  time.advance(50);
  assert.equal(cache.lookup("1.1.1.1"), "a.com");
});

Deno.test("expired names drop out of lookupAll while live ones stay", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now });
  cache.add("old.com", ["1.1.1.1"], 60);
  time.advance(30);
  cache.add("new.com", ["1.1.1.1"], 300);
  time.advance(31);
  assert.deepEqual(cache.lookupAll("1.1.1.1"), ["new.com"]);
  assert.equal(cache.size, 1);
});

Deno.test("size counts live entries only (lazy expiry)", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now });
  cache.add("a.com", ["1.1.1.1", "1.1.1.2"], 60);
  cache.add("b.com", ["1.1.1.3"], 120);
  assert.equal(cache.size, 3);
  time.advance(61);
  assert.equal(cache.size, 1);
});

Deno.test("when full, expired entries are evicted first", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now, capacity: 3 });
  cache.add("long.com", ["1.0.0.1"], 300);
  cache.add("short.com", ["1.0.0.2"], 60);
  cache.add("mid.com", ["1.0.0.3"], 200);
  time.advance(61); // short.com expired, not yet purged
  cache.add("new.com", ["1.0.0.4"], 300);
  assert.equal(cache.lookup("1.0.0.1"), "long.com");
  assert.equal(cache.lookup("1.0.0.3"), "mid.com");
  assert.equal(cache.lookup("1.0.0.4"), "new.com");
  assert.equal(cache.size, 3);
});

Deno.test("when full with no expired entry, the soonest-expiring goes", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now, capacity: 3 });
  cache.add("a.com", ["1.0.0.1"], 300);
  cache.add("b.com", ["1.0.0.2"], 100);
  cache.add("c.com", ["1.0.0.3"], 200);
  cache.add("d.com", ["1.0.0.4"], 300);
  assert.equal(cache.lookup("1.0.0.2"), undefined);
  assert.deepEqual(["1.0.0.1", "1.0.0.3", "1.0.0.4"].map((ip) => cache.lookup(ip)), [
    "a.com",
    "c.com",
    "d.com",
  ]);
  cache.add("e.com", ["1.0.0.5"], 300);
  assert.equal(cache.lookup("1.0.0.3"), undefined);
  assert.equal(cache.size, 3);
});

Deno.test("capacity counts (IP, name) pairs; refreshing an existing pair evicts nothing", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now, capacity: 2 });
  cache.add("a.com", ["1.1.1.1"], 100);
  cache.add("b.com", ["1.1.1.1"], 200);
  cache.add("a.com", ["1.1.1.1"], 100);
  assert.deepEqual(cache.lookupAll("1.1.1.1"), ["a.com", "b.com"]);
  cache.add("c.com", ["1.1.1.1"], 300);
  assert.deepEqual(cache.lookupAll("1.1.1.1"), ["c.com", "b.com"]);
});

Deno.test("many refreshes keep the cache bounded and correct", () => {
  const time = clock();
  const cache = new DnsCache({ now: time.now, capacity: 50 });
  for (let i = 0; i < 5000; i++) {
    cache.add(`h${i % 80}.com`, [`10.0.${i % 7}.1`], 60 + (i % 200));
    if (i % 100 === 0) time.advance(1);
  }
  assert.ok(cache.size <= 50);
  let total = 0;
  for (let k = 0; k < 7; k++) total += cache.lookupAll(`10.0.${k}.1`).length;
  assert.equal(total, cache.size);
});

Deno.test("IPv4-mapped addresses are looked up as IPv4", () => {
  const cache = new DnsCache({ now: clock().now });
  cache.add("a.com", ["1.2.3.4"], 100);
  assert.equal(cache.lookup("::ffff:1.2.3.4"), "a.com");
  cache.add("v6.com", ["2001:DB8::1"], 100);
  assert.equal(cache.lookup("2001:db8::1"), "v6.com");
});

Deno.test("defaults use Date.now; bad options are TypeErrors", () => {
  const cache = new DnsCache();
  cache.add("a.com", ["9.9.9.9"], 60);
  assert.equal(cache.lookup("9.9.9.9"), "a.com");
  assert.throws(() => new DnsCache({ capacity: -1 }), TypeError);
  assert.throws(() => new DnsCache({ minTtl: 10, maxTtl: 5 }), TypeError);
});
