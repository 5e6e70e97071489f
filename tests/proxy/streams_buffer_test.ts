import assert from "node:assert/strict";
import { AdaptiveReadBuffer, IDLE_READ_CHUNK, READ_CHUNK } from "../../src/proxy/streams.ts";

Deno.test("read buffer: small while idle, grows on a full read, shrinks after a run of small reads", () => {
  const buffer = new AdaptiveReadBuffer();
  assert.equal(buffer.bytes.length, IDLE_READ_CHUNK);
  buffer.filled(100);
  assert.equal(buffer.bytes.length, IDLE_READ_CHUNK);
  buffer.filled(IDLE_READ_CHUNK);
  assert.equal(buffer.bytes.length, READ_CHUNK, "a full read means a bulk transfer");
  buffer.filled(READ_CHUNK);
  assert.equal(buffer.bytes.length, READ_CHUNK);
  for (let i = 0; i < 7; i++) buffer.filled(10);
  assert.equal(buffer.bytes.length, READ_CHUNK, "a few small reads keep the large buffer");
  buffer.filled(10);
  assert.equal(buffer.bytes.length, IDLE_READ_CHUNK, "eight small reads in a row shrink it");
});
