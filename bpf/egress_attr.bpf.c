// SPDX-License-Identifier: GPL-2.0
/* Process attribution: records who opened each IPv4 TCP connection and who sent each UDP flow,
 * keyed the way the proxy and the NFQUEUE consumer can rebuild the key (bpf/egress.h).
 * These programs never deny anything (they always return 1 / allow). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "egress.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define BPF_SOCK_OPS_TCP_CONNECT_CB 3

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EGRESS_CONN_ENTRIES);
	__type(key, struct egress_conn_key);
	__type(value, struct egress_conn_value);
} egress_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EGRESS_STASH_ENTRIES);
	__type(key, __u64); /* socket cookie */
	__type(value, struct egress_stash);
} egress_stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct egress_config);
} egress_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EGRESS_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} egress_stats SEC(".maps");

/* The tracepoint is global: it only records tasks under this cgroup (slot 0, set by the loader),
 * the same cgroup the cgroup programs are attached to. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} egress_cgroup SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&egress_stats, &index);
	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline __u64 own_netns_cookie(void)
{
	__u32 zero = 0;
	struct egress_config *config = bpf_map_lookup_elem(&egress_config, &zero);
	return config && config->ready ? config->own_netns_cookie : 0;
}

static __always_inline void fill_who(struct egress_conn_value *who)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	who->tgid = pid_tgid >> 32;
	who->pid = (__u32)pid_tgid;
	who->uid = (__u32)uid_gid;
	who->gid = uid_gid >> 32;
	who->cgroup_id = bpf_get_current_cgroup_id();
	who->recorded_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(who->comm, sizeof(who->comm));
}

static __always_inline int is_loopback4(__u32 ip_be)
{
	return (bpf_ntohl(ip_be) >> 24) == 127;
}

/* Chooses the scope: the netns cookie for the daemon's own netns, the source address otherwise.
 * Returns 0 when the entry cannot be keyed usefully (foreign netns without a source address yet,
 * or loopback traffic of another netns, which can never reach this daemon and would only shadow
 * its own loopback clients). */
static __always_inline int set_scope(struct egress_conn_key *key, __u64 netns_cookie, __u32 src_ip,
				     __u32 dst_ip)
{
	__u64 own = own_netns_cookie();
	if (own == 0 || netns_cookie == own) {
		key->scope_kind = EGRESS_SCOPE_NETNS;
		key->scope = netns_cookie;
		return 1;
	}
	if (src_ip == 0) {
		count(EGRESS_STAT_NO_SOURCE);
		return 0;
	}
	if (is_loopback4(src_ip) || is_loopback4(dst_ip))
		return 0;
	key->scope_kind = EGRESS_SCOPE_SOURCE;
	key->scope = src_ip;
	return 1;
}

static __always_inline int is_v4_mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

static __always_inline void stash_connect(struct bpf_sock_addr *ctx, __u32 dst_ip)
{
	struct egress_stash stash = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);
	fill_who(&stash.who);
	stash.dst_ip = dst_ip;
	stash.dst_port = bpf_ntohs((__u16)ctx->user_port);
	stash.netns_cookie = bpf_get_netns_cookie(ctx);
	bpf_map_update_elem(&egress_stash, &cookie, &stash, BPF_ANY);
	count(EGRESS_STAT_STASHED);
}

SEC("cgroup/connect4")
int egress_conn4(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP)
		stash_connect(ctx, ctx->user_ip4);
	/* A connect()ed UDP socket is recorded on each send by egress_udp_send. */
	return 1;
}

SEC("cgroup/connect6")
int egress_conn6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP && is_v4_mapped(ip6))
		stash_connect(ctx, ip6[3]);
	return 1;
}

SEC("sockops")
int egress_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct egress_stash *stash = bpf_map_lookup_elem(&egress_stash, &cookie);
	if (!stash) {
		count(EGRESS_STAT_STASH_MISS);
		return 1;
	}
	__u32 src_ip = 0;
	if (skops->family == AF_INET) {
		src_ip = skops->local_ip4;
	} else if (skops->family == AF_INET6) {
		__u32 local6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2],
				   skops->local_ip6[3]};
		if (is_v4_mapped(local6))
			src_ip = local6[3];
	}
	struct egress_conn_key key = {};
	key.dst_ip = stash->dst_ip;
	key.dst_port = stash->dst_port;
	key.client_port = (__u16)skops->local_port;
	key.protocol = IPPROTO_TCP;
	if (set_scope(&key, stash->netns_cookie, src_ip, stash->dst_ip)) {
		bpf_map_update_elem(&egress_conns, &key, &stash->who, BPF_ANY);
		count(EGRESS_STAT_TCP_PUBLISHED);
	}
	bpf_map_delete_elem(&egress_stash, &cookie);
	return 1;
}

static __always_inline void record_udp(__u32 dst_ip, __u16 dst_port, __u16 src_port, __u32 src_ip,
				       __u64 netns_cookie)
{
	if (dst_ip == 0 || src_port == 0)
		return;
	struct egress_conn_key key = {};
	key.dst_ip = dst_ip;
	key.dst_port = dst_port;
	key.client_port = src_port;
	key.protocol = IPPROTO_UDP;
	if (!set_scope(&key, netns_cookie, src_ip, dst_ip))
		return;
	struct egress_conn_value who = {};
	fill_who(&who);
	bpf_map_update_elem(&egress_conns, &key, &who, BPF_ANY);
	count(EGRESS_STAT_UDP_RECORDED);
}

/* Unconnected UDP (sendto with an address). The socket is autobound before this hook runs. */
SEC("cgroup/sendmsg4")
int egress_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	/* Both loads unconditional: a selected pointer (ctx or sk) would be refused by the verifier. */
	__u32 msg_src = ctx->msg_src_ip4;
	__u32 bound_src = sk->src_ip4;
	__u32 src_ip = msg_src ? msg_src : bound_src;
	record_udp(ctx->user_ip4, bpf_ntohs((__u16)ctx->user_port), (__u16)sk->src_port, src_ip,
		   bpf_get_netns_cookie(ctx));
	return 1;
}

/* Unconnected UDP to a v4-mapped destination on an IPv6 socket, where the kernel runs the v6 hook. */
SEC("cgroup/sendmsg6")
int egress_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return 1;
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	struct bpf_sock *sk = ctx->sk;
	if (!sk || !is_v4_mapped(ip6))
		return 1;
	__u32 src6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
	__u32 src_ip = is_v4_mapped(src6) ? src6[3] : 0;
	record_udp(ip6[3], bpf_ntohs((__u16)ctx->user_port), (__u16)sk->src_port, src_ip,
		   bpf_get_netns_cookie(ctx));
	return 1;
}

/* Connected UDP (glibc's resolver, dig): send()/write() on a connect()ed socket never reaches the
 * sendmsg hooks, but every send passes this tracepoint in the sender's context. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(egress_udp_send, struct sock *sk, int ret, int flags)
{
	if (ret < 0 || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	__u32 dst_ip = sk->__sk_common.skc_daddr;
	if (dst_ip == 0)
		return 0; /* not connected: the sendmsg hooks saw it */
	__u16 family = sk->__sk_common.skc_family;
	if (family == AF_INET6) {
		__u32 d6[4];
		BPF_CORE_READ_INTO(&d6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
		if (!is_v4_mapped(d6))
			return 0;
	} else if (family != AF_INET) {
		return 0;
	}
	if (bpf_current_task_under_cgroup(&egress_cgroup, 0) != 1)
		return 0;
	__u64 netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	record_udp(dst_ip, bpf_ntohs(sk->__sk_common.skc_dport), sk->__sk_common.skc_num,
		   sk->__sk_common.skc_rcv_saddr, netns_cookie);
	return 0;
}
