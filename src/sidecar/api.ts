// The sidecar HTTP API (sidecar.md §5). `handleApiRequest` is the whole behaviour (testable without
// a socket); `startApi` serves it with Deno.serve. A rejected request changes nothing: the new
// policy is built and validated completely before the sidecar applies it.

import {
  capIssue,
  deleteTargets,
  MAX_RULES,
  parsePolicyBody,
  patchPolicy,
  policyToJson,
  type SidecarPolicy,
} from "./policy.ts";
import type { PolicyIssue } from "../policy/types.ts";

export const MAX_BODY_BYTES = 1024 * 1024;

/** What the API needs from the running sidecar. */
export type ApiTarget = {
  readonly policy: SidecarPolicy;
  readonly healthy: boolean;
  setPolicy(policy: SidecarPolicy): Promise<void>;
  status(): Promise<Record<string, unknown>>;
};

export type ApiContext = {
  target: ApiTarget;
  /** undefined: no token configured ⇒ /policy and /status answer 403 */
  token: string | undefined;
  warn?: (message: string) => void;
};

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

function fail(status: number, message: string, headers: Record<string, string> = {}): Response {
  const response = json(status, { error: message });
  for (const [k, v] of Object.entries(headers)) response.headers.set(k, v);
  return response;
}

function invalid(errors: PolicyIssue[]): Response {
  return json(400, { errors });
}

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Constant-time token check: both sides are hashed, so neither length nor content leaks. */
export async function tokenMatches(presented: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([digest(presented), digest(expected)]);
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

type Body = { ok: true; text: string } | { ok: false; response: Response };

async function readBody(request: Request): Promise<Body> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > MAX_BODY_BYTES) {
    return { ok: false, response: fail(413, `body larger than ${MAX_BODY_BYTES} bytes`) };
  }
  if (request.body === null) return { ok: true, text: "" };
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel().catch(() => {});
      return { ok: false, response: fail(413, `body larger than ${MAX_BODY_BYTES} bytes`) };
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  try {
    return { ok: true, text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    return {
      ok: false,
      response: invalid([{ line: 0, column: 0, message: "body is not valid UTF-8", text: "" }]),
    };
  }
}

function mediaType(request: Request): string | undefined {
  const header = request.headers.get("content-type");
  return header === null ? undefined : header.split(";")[0].trim().toLowerCase();
}

function formatOf(request: Request): "json" | "text" | undefined {
  const type = mediaType(request);
  return type === "application/json" ? "json" : type === "text/plain" ? "text" : undefined;
}

async function apply(context: ApiContext, policy: SidecarPolicy): Promise<Response> {
  try {
    await context.target.setPolicy(policy);
  } catch (error) {
    context.warn?.(`Cannot apply policy: ${(error as Error).message}`);
    return fail(500, `Cannot apply policy: ${(error as Error).message}`);
  }
  return json(200, policyToJson(context.target.policy));
}

async function handlePolicy(request: Request, url: URL, context: ApiContext): Promise<Response> {
  const method = request.method;
  if (method === "GET") return json(200, policyToJson(context.target.policy));
  if (method !== "POST" && method !== "PATCH" && method !== "DELETE") {
    return fail(405, `method ${method} not allowed on /policy`, { allow: "GET, POST, PATCH, DELETE" });
  }
  const body = await readBody(request);
  if (!body.ok) return body.response;
  const empty = body.text.trim() === "";

  if (method === "DELETE") {
    const targets = url.searchParams.getAll("target");
    if (!empty) {
      if (formatOf(request) !== "json") return fail(415, "DELETE body must be application/json");
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.text);
      } catch (error) {
        return invalid([{
          line: 1,
          column: 0,
          message: `invalid JSON: ${(error as Error).message}`,
          text: "",
        }]);
      }
      const list = (parsed as { targets?: unknown } | null)?.targets;
      if (!Array.isArray(list) || !list.every((t) => typeof t === "string")) {
        return invalid([{
          line: 0,
          column: 0,
          message: `body must be {"targets": [strings]}`,
          text: body.text.slice(0, 200),
        }]);
      }
      targets.push(...list);
    }
    if (targets.length === 0) {
      return invalid([{
        line: 0,
        column: 0,
        message: `no target given (body {"targets": [...]} or ?target=)`,
        text: "",
      }]);
    }
    return await apply(context, deleteTargets(context.target.policy, targets));
  }

  const format = formatOf(request);
  if (empty) {
    if (method === "POST") return await apply(context, { defaultAction: "deny", egress: [] });
    return invalid([{ line: 0, column: 0, message: "PATCH needs entries", text: "" }]);
  }
  if (format === undefined) {
    return fail(415, `content-type must be text/plain (policy language) or application/json`);
  }
  const parsed = parsePolicyBody(body.text, format);
  if (!parsed.ok) return invalid(parsed.errors);
  if (method === "POST") return await apply(context, parsed.policy);
  const setsDefault = format === "json" && /"defaultAction"\s*:/.test(body.text) &&
    Object.hasOwn(JSON.parse(body.text), "defaultAction");
  const patched = patchPolicy(context.target.policy, parsed.policy, setsDefault);
  if (!patched.ok) return invalid(patched.errors);
  if (patched.policy.egress.length > MAX_RULES) return invalid([capIssue(patched.policy.egress.length)]);
  return await apply(context, patched.policy);
}

/** The API behaviour for one request. */
export async function handleApiRequest(request: Request, context: ApiContext): Promise<Response> {
  const url = new URL(request.url);
  const path = url.pathname;
  if (path === "/healthz") {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return fail(405, `method ${request.method} not allowed on /healthz`, { allow: "GET" });
    }
    return context.target.healthy
      ? new Response("ok\n", { status: 200, headers: { "content-type": "text/plain" } })
      : new Response("unavailable\n", { status: 503, headers: { "content-type": "text/plain" } });
  }
  if (path !== "/policy" && path !== "/status") return fail(404, `no such endpoint ${path}`);
  if (context.token === undefined) {
    return fail(403, "no API token configured (--api-token-file or EGRESS_API_TOKEN)");
  }
  const authorization = request.headers.get("authorization") ?? "";
  const match = /^Bearer[ ]+(.+)$/i.exec(authorization);
  if (!match || !(await tokenMatches(match[1].trim(), context.token))) {
    return fail(401, "missing or wrong bearer token", { "www-authenticate": "Bearer" });
  }
  if (path === "/status") {
    if (request.method !== "GET") {
      return fail(405, `method ${request.method} not allowed on /status`, { allow: "GET" });
    }
    return json(200, await context.target.status());
  }
  return await handlePolicy(request, url, context);
}

export type ApiServer = { addr: Deno.NetAddr; shutdown(): Promise<void> };

/** Serves the API on `hostname:port`. */
export function startApi(hostname: string, port: number, context: ApiContext): Promise<ApiServer> {
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve({
        hostname,
        port,
        onListen: (addr) => resolve({ addr: addr as Deno.NetAddr, shutdown: () => server.shutdown() }),
        onError: (error) => {
          context.warn?.(`API request failed: ${(error as Error).message}`);
          return fail(500, "internal error");
        },
      }, (request) => handleApiRequest(request, context));
    } catch (error) {
      reject(error);
    }
  });
}
