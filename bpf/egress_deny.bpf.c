// SPDX-License-Identifier: GPL-2.0
/* Deny hooks: no native IPv6, and no socket kinds the packet steering cannot see, for processes
 * under the attached cgroup. Returning 0 from these cgroup programs makes the syscall fail with
 * EPERM (or drops the packet). These links are pinned in bpffs so the denial outlives a crashed
 * daemon (fail closed; docs/kernel.md). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define ETH_P_IPV6 0x86DD
#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60
#define IPPROTO_MPTCP 262
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define LOOPBACK_IFINDEX 1

char LICENSE[] SEC("license") = "GPL";

/* ::1 (cannot leave the host) and ::ffff:a.b.c.d (IPv4 on the wire, steered like IPv4). */
static __always_inline int allowed_v6(struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
	      w3 = ctx->user_ip6[3];
	if (w0 != 0 || w1 != 0)
		return 0;
	if (w2 == bpf_htonl(0xffff))
		return 1;
	return w2 == 0 && w3 == bpf_htonl(1);
}

SEC("cgroup/connect6")
int egress_deny_c6(struct bpf_sock_addr *ctx)
{
	return allowed_v6(ctx);
}

SEC("cgroup/sendmsg6")
int egress_deny_s6(struct bpf_sock_addr *ctx)
{
	return allowed_v6(ctx);
}

/* An allow-list, because the steering rules handle only TCP and UDP: a raw, ICMP, UDP-Lite, SCTP
 * or DCCP socket would send packets that no rule redirects or queues. MPTCP is TCP on the wire
 * (its subflows pass the connect hooks and the TCP rules). Other families never reach this hook
 * (docs/kernel.md, "Socket families"). */
SEC("cgroup/sock_create")
int egress_deny_sock(struct bpf_sock *ctx)
{
	/* All loads first and unconditional: clang would otherwise compute ctx+offset once and load
	 * through it, and the verifier refuses a modified context pointer. */
	__u32 family = ctx->family, type = ctx->type, protocol = ctx->protocol;
	barrier_var(protocol);
	if (family != AF_INET && family != AF_INET6)
		return 1;
	if (type == SOCK_STREAM)
		return protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP;
	if (type == SOCK_DGRAM)
		return protocol == IPPROTO_UDP;
	return 0;
}

/* Last line for IPv6, which no steering rule covers: the address hooks judge only the address the
 * caller passed, so a packet whose wire destination differs must be dropped here. That is a
 * routing header (IPV6_RTHDR needs no privilege: "connect to ::1" with a segment list leaves the
 * host towards its first segment), and a listener's SYN-ACK (an inbound connection would be a
 * reverse channel; IPv4 refuses those in the steering INPUT chain). Kernel-made ICMPv6 (neighbour
 * discovery, MLD) passes: sockets in the cgroup cannot create ICMPv6 sockets. */
SEC("cgroup_skb/egress")
int egress_deny_skb(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6) || skb->ifindex == LOOPBACK_IFINDEX)
		return 1;
	__u8 next;
	if (bpf_skb_load_bytes(skb, 6, &next, 1))
		return 0;
	__u32 offset = 40;
	/* Extension headers before a routing header: hop-by-hop and destination options. */
	for (int i = 0; i < 3; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_DSTOPTS)
			break;
		__u8 header[2];
		if (bpf_skb_load_bytes(skb, offset, header, 2))
			return 0;
		next = header[0];
		offset += ((__u32)header[1] + 1) * 8;
	}
	if (next == IPPROTO_ROUTING || next == IPPROTO_HOPOPTS || next == IPPROTO_DSTOPTS)
		return 0;
	if (next == IPPROTO_TCP) {
		__u8 flags;
		if (bpf_skb_load_bytes(skb, offset + 13, &flags, 1))
			return 0;
		if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK))
			return 0;
	}
	return 1;
}
