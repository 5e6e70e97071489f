// The fields of a connection-log line (events.md §3) that the writer (src/log/connection_log.ts)
// and the replay (src/tools/replay.ts) type alike; each adds the fields it types its own way. Pure:
// types and constants only, no runtime API (the replay also runs under Node).

export const LOG_LINE_TYPES = ["http", "https", "tcp", "udp", "dns", "dns_response", "sudo"] as const;
export type LogLineType = (typeof LOG_LINE_TYPES)[number];

/** Destination, request, DNS answer and verdict fields. */
export type LogLineFields = {
  dst_ip?: string;
  dst_port?: number;
  src_port?: number;
  /** `null` is written only on a TLS-stage `https` error line without SNI */
  host?: string | null;
  url?: string;
  method?: string;
  name?: string;
  answers?: string[];
  ttl?: number;
  policy?: "allow" | "deny";
  rule?: string;
  line?: number;
  reason?: string;
};
