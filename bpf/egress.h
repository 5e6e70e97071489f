/* Shared map layouts of egress's BPF programs. The TypeScript side (src/kernel/attribution.ts)
 * encodes and decodes exactly these layouts: change both together. All structs are padded
 * explicitly so that clang and the TypeScript offsets agree without guessing. */
#ifndef EGRESS_H
#define EGRESS_H

/* Bounded sizes; docs/kernel.md explains the choice and the measured memory. */
#define EGRESS_CONN_ENTRIES 65536
#define EGRESS_STASH_ENTRIES 16384

/* How the key's scope is to be read. */
#define EGRESS_SCOPE_NETNS 1  /* scope = netns cookie (socket lives in the daemon's own netns) */
#define EGRESS_SCOPE_SOURCE 2 /* scope = client IPv4 source address (network byte order) */

/* Key of egress_conns: what the proxy can reconstruct from an accepted connection (plus conntrack)
 * or a queued packet. 24 bytes. */
struct egress_conn_key {
	__u32 dst_ip;      /* original destination, network byte order */
	__u16 dst_port;    /* original destination port, host byte order */
	__u16 client_port; /* the client socket's own (pre-NAT) port, host byte order */
	__u8 protocol;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope_kind;   /* EGRESS_SCOPE_* */
	__u8 pad[2];
	__u32 pad2;
	__u64 scope;
};

/* Who opened the connection. 48 bytes. */
struct egress_conn_value {
	__u32 tgid;
	__u32 uid;
	__u64 cgroup_id;
	__u64 recorded_ns; /* bpf_ktime_get_ns() when written */
	char comm[16];
	__u32 pid; /* thread id that made the call */
	__u32 gid;
};

/* connect4/connect6 know the process and the destination but not the port yet: they park this
 * under the socket cookie and sockops TCP_CONNECT_CB publishes it. 72 bytes. */
struct egress_stash {
	struct egress_conn_value who;
	__u32 dst_ip;
	__u16 dst_port;
	__u16 pad;
	__u64 netns_cookie;
};

/* Written by the loader before attaching. */
struct egress_config {
	__u64 own_netns_cookie; /* sockets in this netns are keyed by netns, others by source address */
	__u32 ready;            /* 1 once the loader wrote the config */
	__u32 pad;
};

/* Indices into egress_stats (array of __u64). */
#define EGRESS_STAT_TCP_PUBLISHED 0
#define EGRESS_STAT_UDP_RECORDED 1
#define EGRESS_STAT_STASH_MISS 2  /* sockops found no stash for a connecting socket */
#define EGRESS_STAT_NO_SOURCE 3   /* foreign-netns socket with no source address yet: not recorded */
#define EGRESS_STAT_STASHED 4
#define EGRESS_STAT_COUNT 8

#endif
