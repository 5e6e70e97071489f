// Public data shapes of the policy library (spec: policy.md §13). Pure: no Deno, no node:.
// Every other module of src/policy imports its types from here so that the shapes exist once.

/** A validation finding. `line` 0 marks a cross-rule warning; `text` is the original line. */
export type PolicyIssue = { line: number; column: number; message: string; text: string };

/** Attribute value: a plain string is a glob; `{literal: true}` is exact; backtick → `{literal: false}`. */
export type AttrValue = string | { value: string; literal: boolean };

export type PolicyOptions = {
  defaults?: {
    port?: number[] | "*";
    protocol?: "tcp" | "udp";
    methods?: string[];
    attrs?: Record<string, AttrValue>;
  };
  /** "owner/repo" for the `{owner}` / `{repo}` placeholders. */
  repository?: string;
  /** Prepend the built-in runner rules and make the runner cgroup a default attribute. */
  runner?: boolean;
};

export type RuleType =
  | "host"
  | "wildcard_host"
  | "ip"
  | "cidr"
  | "url"
  | "path"
  | "dns_host"
  | "dns_wildcard_host";

/** One flattened, self-contained rule (policy.md §8). Key order matters for `toJSON()`. */
export type Rule = {
  type: RuleType;
  target: string;
  port: number[] | "*";
  protocol: "tcp" | "udp";
  methods: string[] | null;
  url_base: string | null;
  attrs: Record<string, AttrValue>;
  passthrough?: true;
  insecure?: true;
  line: number;
};

/** `index` points into `Policy.rules` (built-in rules first). */
export type RuleMatch = { rule: Rule; index: number };

/** What the proxy, DNS proxy or a log replay knows about one connection or request. */
export type ConnectionEvent = {
  type: "http" | "https" | "tcp" | "udp" | "dns";
  dst_ip: string;
  dst_port: number;
  /** SNI or Host; for https at the TLS stage the SNI or absent. */
  host?: string;
  url?: string;
  method?: string;
  /** DNS query name. */
  name?: string;
  exe?: string;
  cmdline?: string[];
  cgroup?: string;
  step?: string;
  action?: string;
  image?: string;
};

export type Decision = {
  allowed: boolean;
  policy: "allow" | "deny";
  rule?: Rule;
  index?: number;
  passthrough: boolean;
  insecure: boolean;
  hostname?: string;
  reason: string;
};
