import assert from "node:assert/strict";
import { parseConnectionLog } from "../../src/cli/connection_log.ts";

Deno.test("connection log: good lines kept with their line numbers, bad ones reported", () => {
  const text = [
    `{"ts":"2026-02-18T10:30:45.123Z","type":"tcp","dst_ip":"1.2.3.4","dst_port":22,"src_port":5,"policy":"deny","reason":"no matching rule"}`,
    ``,
    `not json`,
    `[1,2]`,
    `{"type":"ftp","dst_ip":"1.2.3.4","dst_port":21}`,
    `{"type":"dns","dst_ip":"8.8.8.8","dst_port":53}`,
    `{"type":"udp","dst_ip":"8.8.8.8","dst_port":70000}`,
    `{"type":"tcp","dst_ip":"8.8.8.8","dst_port":1,"cmdline":"curl x"}`,
    `{"type":"dns_response","dst_ip":"8.8.8.8","dst_port":53,"name":"a.com","answers":["1.1.1.1"]}`,
    `{"type":"sudo","cmdline":["id"]}\r`,
    `{"dst_ip":"1.1.1.1"}`,
    `{"type":"https","dst_ip":"1.2.3.4","dst_port":443,"url":"github.com/x","method":"GET"}`,
    `{"type":"http","dst_ip":"1.2.3.4","dst_port":80,"url":"HTTP://a.com/x","method":"GET"}`,
  ].join("\n");
  const { entries, problems } = parseConnectionLog(text);
  assert.deepEqual(entries.map((e) => [e.lineNumber, e.event.type]), [[1, "tcp"], [10, "sudo"], [
    13,
    "http",
  ]]);
  assert.deepEqual(problems.map((p) => p.lineNumber), [3, 4, 5, 6, 7, 8, 9, 11, 12]);
  const reasons = problems.map((p) => p.reason);
  assert.match(reasons[0], /^not valid JSON/);
  assert.equal(reasons[1], "not a JSON object");
  assert.equal(reasons[2], 'unknown type "ftp"');
  assert.equal(reasons[3], 'missing "name" on a dns line');
  assert.equal(reasons[4], '"dst_port" must be an integer 0..65535');
  assert.equal(reasons[5], '"cmdline" must be an array of strings');
  assert.equal(reasons[6], 'dns_response needs "answers" and "ttl"');
  assert.equal(reasons[7], 'missing "type"');
  assert.equal(reasons[8], '"url" must start with http:// or https://');
});

Deno.test("connection log: empty text has no entries and no problems", () => {
  assert.deepEqual(parseConnectionLog(""), { entries: [], problems: [] });
  assert.deepEqual(parseConnectionLog("\n\n  \n"), { entries: [], problems: [] });
});
