// Node client of the control socket (runner.md §5): one line out, one line back.

import { createConnection } from "node:net";

export type Reply = { ok: boolean; text: string };

export function parseReply(line: string): Reply {
  const trimmed = line.replace(/\r?\n$/, "");
  if (trimmed.startsWith("ok:")) return { ok: true, text: trimmed.slice(3).trimStart() };
  if (trimmed.startsWith("error:")) return { ok: false, text: trimmed.slice(6).trimStart() };
  return { ok: false, text: `unexpected reply ${JSON.stringify(trimmed.slice(0, 200))}` };
}

/** Sends `command` (plus the token, if any) and resolves with the reply; rejects when unreachable. */
export function sendCommand(path: string, command: string, token = "", timeoutMs = 10_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    let received = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`Cannot reach the egress daemon at ${path}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`${command}${token ? " " + token : ""}\n`));
    socket.on("data", (chunk) => (received += chunk));
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`Cannot reach the egress daemon at ${path}: ${error.message}`));
    });
    socket.on("close", () => {
      clearTimeout(timer);
      const line = received.split("\n")[0];
      if (received === "") {
        reject(new Error(`Cannot reach the egress daemon at ${path}: connection closed without a reply`));
      } else resolve(parseReply(line));
    });
  });
}
