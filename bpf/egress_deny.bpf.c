// SPDX-License-Identifier: GPL-2.0
/* Deny hooks: no native IPv6 and no raw or ICMP sockets for processes under the attached cgroup.
 * Returning 0 from these cgroup programs makes the syscall fail with EPERM. These links are pinned
 * in bpffs so the denial outlives a crashed daemon (fail closed; docs/kernel.md). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

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

SEC("cgroup/sock_create")
int egress_deny_sock(struct bpf_sock *ctx)
{
	if (ctx->type == SOCK_RAW)
		return 0;
	if (ctx->type == SOCK_DGRAM &&
	    ((ctx->family == AF_INET && ctx->protocol == IPPROTO_ICMP) ||
	     (ctx->family == AF_INET6 && ctx->protocol == IPPROTO_ICMPV6)))
		return 0;
	return 1;
}
