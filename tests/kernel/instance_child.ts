// Test helper process: one egress BPF instance, as a daemon would hold it, in whatever network
// namespace it was started in (nsenter --net=...). Not a test file itself.
// argv[0]: JSON BpfLoadOptions. Prints one "ready {...}" line, then answers one JSON request per
// stdin line with one JSON line: {"op":"packet",...QueuedPacket} | {"op":"accepted",...} | {"op":"stats"}
// | {"op":"exit"}. bigint values are sent as strings.
import { type BpfLoadOptions, loadEgressBpf } from "../../src/kernel/bpf_loader.ts";
import { Attribution } from "../../src/kernel/attribution.ts";

const options = JSON.parse(Deno.args[0]) as BpfLoadOptions;
const bpf = loadEgressBpf({ ...options, log: (level, message) => console.error(`${level}: ${message}`) });
const attribution = new Attribution(bpf);
const json = (value: unknown) => JSON.stringify(value, (_, v) => typeof v === "bigint" ? v.toString() : v);
const encoder = new TextEncoder();
const say = (value: unknown) => Deno.stdout.writeSync(encoder.encode(json(value) + "\n"));

say({
  ready: true,
  netnsCookie: bpf.netnsCookie,
  programs: bpf.programNames(),
  leftovers: bpf.leftoversRemoved,
});

const decoder = new TextDecoder();
let pending = "";
const buffer = new Uint8Array(65536);
for (;;) {
  const n = await Deno.stdin.read(buffer);
  if (n === null) break;
  pending += decoder.decode(buffer.subarray(0, n));
  let newline;
  while ((newline = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, newline);
    pending = pending.slice(newline + 1);
    const request = JSON.parse(line);
    if (request.op === "exit") {
      bpf.close();
      say({ closed: true });
      Deno.exit(0);
    } else if (request.op === "packet") {
      say({ result: attribution.lookupPacket(request) ?? null });
    } else if (request.op === "accepted") {
      say({ result: (await attribution.lookupAccepted(request)) ?? null });
    } else if (request.op === "stats") {
      say({ result: bpf.readStats() });
    } else {
      say({ error: `unknown op ${request.op}` });
    }
  }
}
bpf.close();
