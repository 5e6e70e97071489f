// Realistic audit-mode connection logs (events.md §3) of typical CI jobs, written the way the daemon
// writes them: a job that checks out, runs `npm ci`, `pip install`, `docker pull`, a JavaScript
// action, a composite step, an ssh clone, NTP, plus lines suggest must leave out.

export const RUNNER = "/system.slice/hosted-compute-agent.service";
const CONTAINER =
  "/system.slice/docker-4f1c2a9be0d34b6f8e3d6c1a2b7e9f0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f.scope";

type Fields = Record<string, unknown>;

/** Builds log lines with increasing timestamps and client ports. */
export class LogWriter {
  #clock = 0;
  readonly lines: Fields[] = [];

  add(fields: Fields): this {
    this.#clock++;
    const ts = new Date(Date.UTC(2026, 1, 18, 10, 30, 0, this.#clock * 7)).toISOString();
    const { type, ...rest } = fields;
    const line: Fields = { ts, type };
    if (type !== "sudo") {
      line.dst_ip = rest.dst_ip;
      line.dst_port = rest.dst_port;
      line.src_port = 40000 + this.#clock;
    }
    for (const [k, v] of Object.entries(rest)) if (!(k in line)) line[k] = v;
    this.lines.push(line);
    return this;
  }

  /** A DNS query through the runner's stub resolver and its answer. */
  resolve(name: string, answers: string[], process: Fields, resolver = "127.0.0.53"): this {
    this.add({
      type: "dns",
      dst_ip: resolver,
      dst_port: 53,
      name,
      policy: "deny",
      reason: "name not allowed",
      audit: true,
      ...process,
    });
    return this.add({
      type: "dns_response",
      dst_ip: resolver,
      dst_port: 53,
      name,
      answers,
      ttl: 60,
      policy: "deny",
      audit: true,
      ...process,
    });
  }

  /** An intercepted HTTPS connection: in audit mode it is logged only at request level. */
  https(host: string, ip: string, requests: Array<[string, string]>, process: Fields): this {
    for (const [method, path] of requests) {
      this.add({
        type: "https",
        dst_ip: ip,
        dst_port: 443,
        url: `https://${host}${path}`,
        method,
        policy: "deny",
        reason: "no matching rule",
        audit: true,
        ...process,
      });
    }
    return this;
  }

  text(): string {
    return this.lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
  }
}

export const CHECKOUT = {
  pid: 2101,
  exe: "/usr/lib/git-core/git-remote-https",
  cmdline: ["/usr/lib/git-core/git-remote-https", "origin", "https://github.com/octo/app"],
  cgroup: RUNNER,
  step: "__actions_checkout",
  action: "actions/checkout",
};
export const NPM = {
  pid: 2200,
  exe: "/opt/hostedtoolcache/node/20.11.0/x64/bin/node",
  cmdline: ["node", "/usr/bin/npm", "ci"],
  cgroup: RUNNER,
  step: "__run",
};
export const PIP = {
  pid: 2300,
  exe: "/usr/bin/python3.12",
  cmdline: ["python3", "-m", "pip", "install", "-r", "requirements.txt"],
  cgroup: RUNNER,
  step: "__run_2",
};
export const DOCKERD = {
  pid: 900,
  exe: "/usr/bin/dockerd",
  cmdline: ["/usr/bin/dockerd", "-H", "fd://"],
  cgroup: "/system.slice/docker.service",
  step: "__run_3",
};
export const IN_CONTAINER = {
  pid: 3100,
  exe: "/usr/local/bin/node",
  cmdline: ["node", "fetch.js"],
  cgroup: CONTAINER,
  image: "node:18-alpine",
  step: "__run_3",
};
export const SCRIPT_ACTION = {
  pid: 2400,
  exe: "/home/runner/runners/2.311.0/externals/node20/bin/node",
  cmdline: [
    "/home/runner/runners/2.311.0/externals/node20/bin/node",
    "/home/runner/work/_actions/actions/github-script/v7/dist/index.js",
  ],
  cgroup: RUNNER,
  step: "label",
  action: "actions/github-script",
};
export const COMPOSITE_CURL = {
  pid: 2500,
  exe: "/usr/bin/curl",
  cmdline: ["curl", "-fsSL", "https://deb.nodesource.com/setup_20.x"],
  cgroup: RUNNER,
  step: "__octo_setup-tools",
  action: "octo/setup-tools",
};
export const SSH = {
  pid: 2600,
  exe: "/usr/bin/ssh",
  cmdline: ["ssh", "-T", "git@github.com"],
  cgroup: RUNNER,
  step: "__run_4",
};
export const CHRONY = {
  pid: 700,
  exe: "/usr/sbin/chronyd",
  cmdline: ["/usr/sbin/chronyd"],
  cgroup: "/system.slice/chrony.service",
};

/** The whole job. */
export function ciJobLog(): LogWriter {
  const w = new LogWriter();
  // actions/checkout: git over HTTPS.
  w.resolve("github.com", ["140.82.112.3"], CHECKOUT);
  w.https("github.com", "140.82.112.3", [
    ["GET", "/octo/app/info/refs?service=git-upload-pack"],
    ["POST", "/octo/app/git-upload-pack"],
    ["POST", "/octo/app/git-upload-pack"],
  ], CHECKOUT);
  // npm ci: metadata and tarballs (scoped and unscoped).
  w.resolve("registry.npmjs.org", ["104.16.2.35"], NPM);
  w.https("registry.npmjs.org", "104.16.2.35", [
    ["GET", "/express/-/express-4.18.2.tgz"],
    ["GET", "/@types/node/-/node-20.11.5.tgz"],
    ["GET", "/lodash/-/lodash-4.17.21.tgz"],
  ], NPM);
  // pip install: the simple index and files by hash directory.
  w.resolve("pypi.org", ["151.101.0.223"], PIP);
  w.https("pypi.org", "151.101.0.223", [["GET", "/simple/requests/"], ["GET", "/simple/urllib3/"]], PIP);
  w.resolve("files.pythonhosted.org", ["151.101.1.63"], PIP);
  w.https("files.pythonhosted.org", "151.101.1.63", [
    [
      "GET",
      "/packages/70/8e/0e2d847013cb52cd35b38c009bb167a1a26b2ce6cd6965bf26b47bc0bf44/requests-2.31.0-py3-none-any.whl",
    ],
    [
      "GET",
      "/packages/a2/73/a68704750a7679d0b6d3ad7aa8d4da8e14e151ae82e6fee774e6e0d05ec8/urllib3-2.1.0-py3-none-any.whl",
    ],
  ], PIP);
  // docker pull by dockerd: token, manifests, blobs (redirected to the CDN).
  w.resolve("registry-1.docker.io", ["54.236.113.205"], DOCKERD);
  w.https("registry-1.docker.io", "54.236.113.205", [
    ["GET", "/v2/"],
    ["HEAD", "/v2/library/node/manifests/18-alpine"],
    [
      "GET",
      "/v2/library/node/manifests/sha256:9e38a3ab05b4a4e8c3f5b6f7a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0",
    ],
    ["GET", "/v2/library/node/blobs/sha256:1f6ab8d3c4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1"],
    ["GET", "/v2/library/node/blobs/sha256:2a7bc9e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2"],
    ["GET", "/v2/library/node/blobs/sha256:3b8cd0f5e6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3"],
  ], DOCKERD);
  w.resolve("auth.docker.io", ["3.219.239.5"], DOCKERD);
  w.https("auth.docker.io", "3.219.239.5", [[
    "GET",
    "/token?scope=repository%3Alibrary%2Fnode%3Apull&service=registry.docker.io",
  ]], DOCKERD);
  // A process inside the container: Docker's embedded resolver, then HTTPS.
  w.resolve("api.example.com", ["203.0.113.50"], IN_CONTAINER, "127.0.0.11");
  w.https("api.example.com", "203.0.113.50", [["GET", "/v1/items/1842"], ["GET", "/v1/items/1907"], [
    "POST",
    "/v1/items",
  ]], IN_CONTAINER);
  // actions/github-script: the REST API, ids varying.
  w.resolve("api.github.com", ["140.82.112.5"], SCRIPT_ACTION);
  w.https("api.github.com", "140.82.112.5", [
    ["GET", "/repos/octo/app/actions/runs/7712345678/jobs"],
    ["GET", "/repos/octo/app/actions/runs/7712399999/jobs"],
    ["POST", "/repos/octo/app/issues/42/comments"],
  ], SCRIPT_ACTION);
  // A composite action's curl.
  w.resolve("deb.nodesource.com", ["104.22.4.1"], COMPOSITE_CURL);
  w.https("deb.nodesource.com", "104.22.4.1", [["GET", "/setup_20.x"]], COMPOSITE_CURL);
  // ssh to github.com:22 (named from the DNS answer above) and git over https in the same step.
  w.resolve("github.com", ["140.82.112.3"], SSH);
  w.add({
    type: "tcp",
    dst_ip: "140.82.112.3",
    dst_port: 22,
    host: "github.com",
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...SSH,
  });
  w.add({
    type: "https",
    dst_ip: "140.82.112.3",
    dst_port: 443,
    host: "github.com",
    passthrough: true,
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...SSH,
  });
  // A lookup that led to no connection, through a resolver no built-in rule allows.
  w.add({
    type: "dns",
    dst_ip: "8.8.8.8",
    dst_port: 53,
    name: "mirror.example.org",
    policy: "deny",
    reason: "resolver not allowed",
    audit: true,
    ...SSH,
  });
  // A raw TCP connection to an IP nobody resolved.
  w.add({
    type: "tcp",
    dst_ip: "198.51.100.7",
    dst_port: 5432,
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...SSH,
  });
  // NTP from a system service (own cgroup).
  w.add({
    type: "udp",
    dst_ip: "162.159.200.1",
    dst_port: 123,
    policy: "deny",
    reason: "no matching rule",
    audit: true,
    ...CHRONY,
  });
  // Left out: the built-in results receiver, a failed TLS handshake, an unattributed query.
  w.resolve("results-receiver.actions.githubusercontent.com", ["20.42.0.1"], {
    exe: "/home/runner/runners/2.311.0/bin/Runner.Worker",
    cgroup: RUNNER,
  });
  w.add({
    type: "https",
    dst_ip: "20.42.0.1",
    dst_port: 443,
    host: "results-receiver.actions.githubusercontent.com",
    policy: "allow",
    rule: "results-receiver.actions.githubusercontent.com",
    line: 0,
    audit: true,
    exe: "/home/runner/runners/2.311.0/bin/Runner.Worker",
    cgroup: RUNNER,
  });
  w.add({
    type: "https",
    dst_ip: "93.184.216.34",
    dst_port: 443,
    host: "pinned.example.org",
    policy: "deny",
    reason: "no matching rule",
    error: "tls_client_rejected_ca",
    audit: true,
    ...NPM,
  });
  w.add({
    type: "dns",
    dst_ip: "127.0.0.53",
    dst_port: 53,
    name: "telemetry.example.net",
    policy: "deny",
    reason: "name not allowed",
    audit: true,
  });
  return w;
}
