// The guarded-ports map layout and the autobind check (pure; no root needed).
import assert from "node:assert/strict";
import {
  autobindablePorts,
  encodeDenyPorts,
  GUARDED_PORT_SLOTS,
  hostLittleEndian,
} from "../../src/kernel/bpf_loader.ts";

Deno.test("deny ports: struct egress_deny_ports is the netns cookie then u16 ports, 0-padded", () => {
  const value = encodeDenyPorts(0x0102030405060708n, [15080, 15053]);
  assert.equal(value.length, 8 + 2 * GUARDED_PORT_SLOTS);
  const view = new DataView(value.buffer);
  assert.equal(view.getBigUint64(0, hostLittleEndian), 0x0102030405060708n);
  assert.deepEqual([0, 1, 2, 3].map((i) => view.getUint16(8 + 2 * i, hostLittleEndian)), [
    15080,
    15053,
    0,
    0,
  ]);
  assert.throws(() => encodeDenyPorts(1n, [1, 2, 3, 4, 5]), /at most 4/);
});

Deno.test("deny ports: autobind can hand out a guarded port only inside the ephemeral range, unreserved", () => {
  assert.deepEqual(autobindablePorts("32768\t60999\n", "\n", [15080, 15053]), []);
  assert.deepEqual(autobindablePorts("1024\t65535\n", "\n", [15080, 15053]), [15080, 15053]);
  assert.deepEqual(autobindablePorts("1024 65535", "15050-15060,15080\n", [15080, 15053]), []);
  assert.deepEqual(autobindablePorts("1024 65535", "15080\n", [15080, 15053]), [15053]);
});
