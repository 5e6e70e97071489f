// `egress demo` (what `deno task start` runs until the daemon exists): intercepts nothing. It
// validates an embedded policy and shows the policy engine deciding sample connections.

import { Enforcer, parsePolicy, validatePolicy } from "../policy/mod.ts";
import type { ConnectionEvent, PolicyOptions } from "../policy/types.ts";
import { parseArgs } from "./args.ts";
import { ruleSourceText } from "../policy/policy.ts";

export const DEMO_USAGE = `Usage: egress demo

Shows the policy engine deciding sample connections against an embedded policy. Nothing is
intercepted: live interception ("egress start") arrives in a later release.`;

export const DEMO_POLICY = `# egress demo policy
github.com
*.githubusercontent.com
GET https://api.example.com/v1/*
dns:registry.npmjs.org
registry.npmjs.org
# the only resolver jobs may ask
8.8.8.8:53/udp
`;

type Sample = { what: string; event: ConnectionEvent; mitm?: boolean };

export const DEMO_SAMPLES: Sample[] = [
  {
    what: "TLS to github.com",
    event: { type: "https", dst_ip: "140.82.112.3", dst_port: 443, host: "github.com" },
  },
  {
    what: "TLS to raw.githubusercontent.com",
    event: { type: "https", dst_ip: "185.199.108.133", dst_port: 443, host: "raw.githubusercontent.com" },
  },
  {
    what: "GET https://api.example.com/v1/items",
    event: {
      type: "https",
      dst_ip: "93.184.215.14",
      dst_port: 443,
      url: "https://api.example.com/v1/items",
      method: "GET",
    },
  },
  {
    what: "POST https://api.example.com/v1/items",
    event: {
      type: "https",
      dst_ip: "93.184.215.14",
      dst_port: 443,
      url: "https://api.example.com/v1/items",
      method: "POST",
    },
  },
  {
    what: "GET https://api.example.com/admin",
    event: {
      type: "https",
      dst_ip: "93.184.215.14",
      dst_port: 443,
      url: "https://api.example.com/admin",
      method: "GET",
    },
  },
  {
    what: "TLS to exfil.example",
    event: { type: "https", dst_ip: "203.0.113.66", dst_port: 443, host: "exfil.example" },
  },
  {
    what: "DNS github.com via 8.8.8.8",
    event: { type: "dns", dst_ip: "8.8.8.8", dst_port: 53, name: "github.com" },
  },
  {
    what: "DNS registry.npmjs.org via 8.8.8.8",
    event: { type: "dns", dst_ip: "8.8.8.8", dst_port: 53, name: "registry.npmjs.org" },
  },
  {
    what: "DNS exfil.example via 8.8.8.8",
    event: { type: "dns", dst_ip: "8.8.8.8", dst_port: 53, name: "exfil.example" },
  },
  {
    what: "DNS github.com via 1.1.1.1",
    event: { type: "dns", dst_ip: "1.1.1.1", dst_port: 53, name: "github.com" },
  },
  { what: "UDP to 8.8.8.8:53", event: { type: "udp", dst_ip: "8.8.8.8", dst_port: 53 } },
  { what: "SSH to 203.0.113.7:22", event: { type: "tcp", dst_ip: "203.0.113.7", dst_port: 22 } },
];

// The demo runs outside a runner: no built-in runner rules, no implicit runner cgroup.
const OPTIONS: PolicyOptions = { runner: false };

export function runDemo(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, { help: { kind: "boolean", short: "h" } } as const);
  if (flags.help) {
    console.log(DEMO_USAGE);
    return Promise.resolve(0);
  }
  console.log("egress demo: live interception (`egress start`) arrives in a later release;");
  console.log("nothing on this machine is intercepted or blocked. This shows the policy engine.");
  console.log("");

  const { rules, errors, warnings } = validatePolicy(DEMO_POLICY, OPTIONS);
  console.log(`policy: ${rules.length} rules, ${errors.length} errors, ${warnings.length} warnings`);
  if (errors.length > 0) {
    for (const e of errors) console.error(`demo policy:${e.line}:${e.column}: error: ${e.message}`);
    return Promise.resolve(1);
  }
  const policy = parsePolicy(DEMO_POLICY, OPTIONS);
  policy.rules.forEach((rule, index) => console.log(`  line ${rule.line}: ${ruleSourceText(policy, index)}`));
  console.log("");
  const enforcer = new Enforcer(policy);
  let allowed = 0;
  let denied = 0;
  for (const sample of DEMO_SAMPLES) {
    const d = enforcer.decide(sample.event, { mitm: sample.mitm ?? false });
    if (d.allowed) allowed++;
    else denied++;
    const why = d.allowed && d.index !== undefined
      ? `line ${policy.rules[d.index].line}: ${ruleSourceText(policy, d.index)}`
      : d.reason;
    console.log(`${d.allowed ? "allow" : "deny "}  ${sample.what.padEnd(40)}  ${why}`);
  }
  console.log("");
  console.log(`${allowed} allowed, ${denied} denied`);
  return Promise.resolve(0);
}
