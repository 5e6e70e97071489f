// SPDX-License-Identifier: GPL-2.0
/* Deny hooks: no native IPv6, no socket kinds the packet steering cannot see, and no binding of
 * egress's own ports (where the steering redirects to) by anyone but root, for processes under the
 * attached cgroup. Returning 0 from these cgroup programs makes the syscall fail with
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

/* The ports the steering rules redirect to (proxy, DNS), written by the loader before attaching.
 * src/kernel/bpf_loader.ts encodes exactly this layout (16 bytes). */
#define EGRESS_GUARDED_PORTS 4
struct egress_deny_ports {
	__u64 netns_cookie;                  /* the daemon's netns (where the steering redirects) */
	__u16 ports[EGRESS_GUARDED_PORTS];   /* host byte order; 0 = unused slot */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct egress_deny_ports);
} egress_deny_ports SEC(".maps");

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

/* While no daemon runs (crashed, before the next start cleaned up) its ports are free, and whoever
 * binds one receives every redirected connection or DNS query. Refuse a bind to a guarded port,
 * TCP or UDP, any address (bind6 also sees "::" and v4-mapped addresses, so dual-stack sockets are
 * covered), in the daemon's netns, unless the caller is root (egress itself; root is out of scope).
 * SO_REUSEPORT needs a bind too. Port 0 and autobind (connect, listen, sendto on an unbound socket)
 * never run this hook: they take ephemeral ports, which the loader checks exclude these. */
static __always_inline int bind_allowed(struct bpf_sock_addr *ctx)
{
	__u32 user_port = ctx->user_port;
	__u16 port = bpf_ntohs((__u16)user_port);
	if (port == 0)
		return 1;
	__u32 key = 0;
	struct egress_deny_ports *config = bpf_map_lookup_elem(&egress_deny_ports, &key);
	if (!config)
		return 1;
	int guarded = 0;
	for (int i = 0; i < EGRESS_GUARDED_PORTS; i++) {
		if (config->ports[i] != 0 && config->ports[i] == port)
			guarded = 1;
	}
	if (!guarded)
		return 1;
	if (config->netns_cookie != 0 && bpf_get_netns_cookie(ctx) != config->netns_cookie)
		return 1;
	return (__u32)bpf_get_current_uid_gid() == 0;
}

SEC("cgroup/bind4")
int egress_deny_b4(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

SEC("cgroup/bind6")
int egress_deny_b6(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}
