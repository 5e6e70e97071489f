// Flushing this namespace's conntrack table at startup (ctnetlink IPCTNL_MSG_CT_DELETE without a
// tuple). Flows that existed before the table did (earlier init containers, or the gap while a
// stopped sidecar restarts) would otherwise pass forever through `ct state established` and, for
// UDP port 53, past the redirect. After the flush their next packet is new and judged by policy.

import {
  AF_NETLINK,
  closeFd,
  ENOENT,
  errno,
  libc,
  MSG_DONTWAIT,
  OsError,
  POLLIN,
  SOCK_CLOEXEC,
  SOCK_RAW,
} from "../../ffi/libc.ts";

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLMSG_ERROR = 2;
const ACK_TIMEOUT_MS = 2000;

/** The request: nlmsghdr + nfgenmsg (family AF_UNSPEC: every family), no attributes. */
export function flushRequest(seq: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(20);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, bytes.length, true);
  view.setUint16(4, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, true);
  view.setUint16(6, NLM_F_REQUEST | NLM_F_ACK, true);
  view.setUint32(8, seq, true);
  // pid 0, nfgen_family 0, version 0 (NFNETLINK_V0), res_id 0
  return bytes;
}

/** Deletes every conntrack entry of the calling thread's network namespace. */
export async function flushConntrack(): Promise<void> {
  const c = libc();
  const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) throw new OsError("open a ctnetlink socket", errno());
  try {
    const seq = Date.now() >>> 0;
    const request = flushRequest(seq);
    if (Number(c.send(fd, request, BigInt(request.length), 0)) < 0) {
      throw new OsError("send the conntrack flush", errno());
    }
    const pollfd = new Uint8Array(8);
    const view = new DataView(pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
    const buffer = new Uint8Array(4096);
    const deadline = Date.now() + ACK_TIMEOUT_MS;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0 || (await c.poll_async(pollfd, 1n, remaining)) === 0) {
        throw new Error("Cannot flush conntrack: no answer from the kernel");
      }
      const n = Number(c.recv(fd, buffer, BigInt(buffer.length), MSG_DONTWAIT));
      if (n < 20) continue;
      const reply = new DataView(buffer.buffer, 0, n);
      if (reply.getUint16(4, true) !== NLMSG_ERROR || reply.getUint32(8, true) !== seq) continue;
      const code = -reply.getInt32(16, true);
      if (code === 0 || code === ENOENT) return; // ENOENT: the table was empty
      throw new OsError("flush conntrack", code);
    }
  } finally {
    closeFd(fd);
  }
}
