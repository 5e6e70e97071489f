// The shipped examples (sidecar.md §8) stay valid: YAML parses, policies parse in sidecar mode,
// only the sidecar is privileged, the host network is not used.
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { parseTextPolicy } from "../../src/sidecar/policy.ts";

const EXAMPLES = new URL("../../examples/", import.meta.url);

Deno.test("examples/kubernetes/pod.yaml: native sidecar with NET_ADMIN, unprivileged app, policy valid", async () => {
  const docs = parseAllDocuments(await Deno.readTextFile(new URL("kubernetes/pod.yaml", EXAMPLES))).map((d) =>
    d.toJS()
  );
  const configMap = docs.find((d) => d.kind === "ConfigMap");
  const pod = docs.find((d) => d.kind === "Pod");
  const policy = parseTextPolicy(configMap.data["policy.txt"]);
  assert.ok(policy.ok, JSON.stringify(policy));
  assert.notEqual(pod.spec.hostNetwork, true);
  assert.equal(pod.spec.automountServiceAccountToken, false);
  const sidecar = pod.spec.initContainers[0];
  assert.equal(sidecar.restartPolicy, "Always");
  assert.equal(sidecar.args[0], "sidecar");
  assert.deepEqual(sidecar.securityContext.capabilities, { drop: ["ALL"], add: ["NET_ADMIN"] });
  assert.equal(sidecar.startupProbe.httpGet.path, "/healthz");
  assert.equal(sidecar.livenessProbe, undefined); // a SIGTERM restart would open a gap
  assert.deepEqual(sidecar.env.map((e: { name: string }) => e.name), ["EGRESS_POD_IP", "EGRESS_HOST_IP"]);
  for (const app of pod.spec.containers) {
    assert.ok(app.securityContext.runAsUser > 0);
    assert.equal(app.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(app.securityContext.capabilities, { drop: ["ALL"] });
  }
});

Deno.test("examples/compose: app shares the sidecar's namespace, waits for health; policy valid", async () => {
  const compose = parseAllDocuments(await Deno.readTextFile(new URL("compose/compose.yaml", EXAMPLES)))[0]
    .toJS();
  assert.deepEqual(compose.services.egress.cap_add, ["NET_ADMIN"]);
  assert.deepEqual(compose.services.egress.healthcheck.test, ["CMD", "egress", "sidecar", "--healthcheck"]);
  assert.equal(compose.services.app.network_mode, "service:egress");
  assert.equal(compose.services.app.depends_on.egress.condition, "service_healthy");
  assert.deepEqual(compose.services.app.cap_drop, ["ALL"]);
  assert.deepEqual(compose.services.app.security_opt, ["no-new-privileges:true"]);
  const policy = parseTextPolicy(await Deno.readTextFile(new URL("compose/policy.txt", EXAMPLES)));
  assert.ok(policy.ok, JSON.stringify(policy));
  if (policy.ok) {
    assert.deepEqual(policy.policy.egress.map((e) => e.target), ["pypi.org", "files.pythonhosted.org"]);
  }
});
