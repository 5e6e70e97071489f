import assert from "node:assert/strict";
import { attributionMapPin, removeLeftoverPins } from "../../src/kernel/bpf_loader.ts";

// Plain files stand in for pins: removal of a pin is an unlink, which is what is checked here.
Deno.test("leftover pins: the worker's attribution map pin of the instance goes too, others stay", () => {
  const bpffs = Deno.makeTempDirSync({ prefix: "egress-fake-bpffs-" });
  try {
    Deno.mkdirSync(`${bpffs}/egress-a`);
    Deno.writeTextFileSync(`${bpffs}/egress-a/egress_deny_ports`, "");
    Deno.writeTextFileSync(attributionMapPin("a", bpffs), "");
    Deno.writeTextFileSync(attributionMapPin("b", bpffs), "");
    assert.equal(attributionMapPin("a", bpffs), `${bpffs}/egress-a-conns`);
    assert.equal(removeLeftoverPins("a", bpffs), 2);
    assert.deepEqual([...Deno.readDirSync(bpffs)].map((e) => e.name), ["egress-b-conns"]);
    assert.equal(removeLeftoverPins("a", bpffs), 0, "idempotent");
  } finally {
    Deno.removeSync(bpffs, { recursive: true });
  }
});
