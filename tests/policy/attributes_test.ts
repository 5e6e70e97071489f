import assert from "node:assert/strict";
import { attributesMatch, compileAttributes } from "../../src/policy/attributes.ts";
import type { ConnectionEvent } from "../../src/policy/types.ts";

const base: ConnectionEvent = { type: "https", dst_ip: "1.2.3.4", dst_port: 443 };
const proc = (extra: Partial<ConnectionEvent>): ConnectionEvent => ({ ...base, ...extra });

Deno.test("no attributes always match", () => {
  assert.equal(attributesMatch({}, base), true);
});

Deno.test("exe: glob (unquoted / backtick) and exact (double-quoted)", () => {
  assert.equal(attributesMatch({ exe: "*/node" }, proc({ exe: "/usr/local/bin/node" })), true);
  assert.equal(attributesMatch({ exe: "*/node" }, proc({ exe: "/usr/local/bin/nodejs" })), false);
  assert.equal(
    attributesMatch({ exe: { value: "/opt/my app/*", literal: false } }, proc({ exe: "/opt/my app/x" })),
    true,
  );
  assert.equal(attributesMatch({ exe: { value: "/opt/*", literal: true } }, proc({ exe: "/opt/x" })), false);
  assert.equal(attributesMatch({ exe: { value: "/opt/*", literal: true } }, proc({ exe: "/opt/*" })), true);
});

Deno.test("a value the event lacks never matches", () => {
  for (const key of ["exe", "step", "action", "cgroup", "image", "arg", "arg[0]"]) {
    assert.equal(attributesMatch({ [key]: "*" }, base), false, key);
  }
  assert.equal(attributesMatch({ cgroup: "@host" }, base), false);
  assert.equal(attributesMatch({ cgroup: "@docker" }, base), false);
});

Deno.test("arg matches any argv element; arg[N] element N (0-based)", () => {
  const event = proc({ cmdline: ["/usr/bin/git", "fetch", "origin"] });
  assert.equal(attributesMatch({ arg: "fetch" }, event), true);
  assert.equal(attributesMatch({ arg: "push" }, event), false);
  assert.equal(attributesMatch({ "arg[1]": "fetch" }, event), true);
  assert.equal(attributesMatch({ "arg[2]": "fetch" }, event), false);
  assert.equal(attributesMatch({ "arg[0]": "*/git" }, event), true);
  assert.equal(attributesMatch({ "arg[3]": "*" }, event), false); // N ≥ argc
  assert.equal(attributesMatch({ arg: { value: "", literal: true } }, proc({ cmdline: ["a", ""] })), true);
  assert.equal(attributesMatch({ arg: { value: "", literal: true } }, proc({ cmdline: ["a"] })), false);
  assert.equal(attributesMatch({ arg: { value: "a b", literal: true } }, proc({ cmdline: ["a b"] })), true);
});

Deno.test("step, action, image compare their event fields", () => {
  const event = proc({ step: "__run_2", action: "actions/checkout", image: "node:18-alpine" });
  assert.equal(attributesMatch({ step: "__run_*" }, event), true);
  assert.equal(attributesMatch({ action: "actions/*" }, event), true);
  assert.equal(attributesMatch({ action: "docker/*" }, event), false);
  assert.equal(attributesMatch({ image: "node:18-*" }, event), true);
  assert.equal(attributesMatch({ image: "node:20-*" }, event), false);
});

Deno.test("all attributes must match", () => {
  const event = proc({ exe: "/usr/bin/curl", step: "build" });
  assert.equal(attributesMatch({ exe: "/usr/bin/curl", step: "build" }, event), true);
  assert.equal(attributesMatch({ exe: "/usr/bin/curl", step: "test" }, event), false);
});

Deno.test("cgroup shortcuts @docker / @host (ASCII case-insensitive), literal when double-quoted", () => {
  const docker = proc({ cgroup: "/system.slice/docker-0123abcd.scope" });
  const daemon = proc({ cgroup: "/system.slice/docker.service" });
  const upper = proc({ cgroup: "/DOCKER/abc" });
  const runner = proc({ cgroup: "/system.slice/hosted-compute-agent.service" });
  assert.equal(attributesMatch({ cgroup: "@docker" }, docker), true);
  assert.equal(attributesMatch({ cgroup: "@docker" }, daemon), true);
  assert.equal(attributesMatch({ cgroup: "@docker" }, upper), true);
  assert.equal(attributesMatch({ cgroup: "@docker" }, runner), false);
  assert.equal(attributesMatch({ cgroup: "@host" }, runner), true);
  assert.equal(attributesMatch({ cgroup: "@host" }, daemon), false);
  assert.equal(attributesMatch({ cgroup: { value: "@docker", literal: false } }, docker), true);
  assert.equal(attributesMatch({ cgroup: { value: "@docker", literal: true } }, docker), false);
  assert.equal(
    attributesMatch({ cgroup: { value: "@docker", literal: true } }, proc({ cgroup: "@docker" })),
    true,
  );
  assert.equal(attributesMatch({ cgroup: "/system.slice/*" }, runner), true);
  assert.equal(attributesMatch({ cgroup: "*" }, runner), true);
});

Deno.test("an unknown attribute key fails closed", () => {
  assert.equal(attributesMatch({ user: "*" }, proc({ exe: "/x" })), false);
});

Deno.test("compiled predicates are reusable", () => {
  const predicate = compileAttributes({ exe: "*/python3*", "arg[1]": "-m" });
  assert.equal(predicate(proc({ exe: "/usr/bin/python3.11", cmdline: ["python3", "-m", "pip"] })), true);
  assert.equal(predicate(proc({ exe: "/usr/bin/python3.11", cmdline: ["python3", "x.py"] })), false);
});
