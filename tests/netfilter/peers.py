#!/usr/bin/python3
# Test peers for tests/netfilter: tiny servers that say who they are, and clients that report
# where their connection landed. Every loop is bounded by a time limit.
#
#   peers.py tcp-server PORT NAME SECONDS    accept, send "NAME <local ip:port>\n", close
#   peers.py udp-server PORT NAME SECONDS    answer every datagram with "NAME"
#   peers.py tcp-client HOST PORT SECONDS    print the banner, or TIMEOUT / REFUSED / ERROR ...
#   peers.py udp-client HOST PORT COUNT SECONDS   send COUNT datagrams on one socket, print replies
#   peers.py udp-session HOST PORT SECONDS   one socket; each stdin line sends a datagram, prints the reply
import socket
import struct
import sys
import time


def tcp_server(port, name, seconds):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(64)
    print("ready", flush=True)
    deadline = time.time() + seconds
    while time.time() < deadline:
        server.settimeout(max(0.1, deadline - time.time()))
        try:
            conn, _ = server.accept()
        except socket.timeout:
            break
        local = conn.getsockname()
        try:
            conn.sendall(f"{name} {local[0]}:{local[1]}\n".encode())
        finally:
            conn.close()


IP_PKTINFO = 8  # <linux/in.h>


def udp_server(port, name, seconds):
    # Answers from the address the datagram was sent to (IP_PKTINFO), as a REDIRECT target must:
    # a redirected query arrives at 127.0.0.1 while the client's own address is another one, and a
    # reply from that other address would not match the conntrack entry, so the client never sees it.
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    server.bind(("0.0.0.0", port))
    print("ready", flush=True)
    deadline = time.time() + seconds
    while time.time() < deadline:
        server.settimeout(max(0.1, deadline - time.time()))
        try:
            _, ancillary, _, peer = server.recvmsg(2048, socket.CMSG_SPACE(12))
        except socket.timeout:
            break
        local = b"\0\0\0\0"
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                local = struct.unpack("i4s4s", data[:12])[2]
        info = struct.pack("i4s4s", 0, local, b"\0\0\0\0")
        server.sendmsg([name.encode()], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, peer)


def tcp_client(host, port, seconds):
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(seconds)
    try:
        client.connect((host, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(256)
            if not chunk:
                break
            data += chunk
        print(data.decode().strip() or "EMPTY")
    except socket.timeout:
        print("TIMEOUT")
    except ConnectionRefusedError:
        print("REFUSED")
    except OSError as error:
        print(f"ERROR {error.errno}")


def udp_client(host, port, count, seconds):
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(seconds)
    client.connect((host, port))
    replies = []
    for index in range(count):
        try:
            client.send(f"ping {index}".encode())
            replies.append(client.recv(2048).decode())
        except socket.timeout:
            replies.append("TIMEOUT")
        except OSError as error:
            replies.append(f"ERROR {error.errno}")
    print(" ".join(replies))


def udp_session(host, port, seconds):
    # One socket kept across rule changes: each stdin line sends a datagram and prints the reply.
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(seconds)
    client.connect((host, port))
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            client.send(line.strip().encode())
            print(client.recv(2048).decode(), flush=True)
        except socket.timeout:
            print("TIMEOUT", flush=True)
        except OSError as error:
            print(f"ERROR {error.errno}", flush=True)


def main():
    mode = sys.argv[1]
    args = sys.argv[2:]
    if mode == "tcp-server":
        tcp_server(int(args[0]), args[1], float(args[2]))
    elif mode == "udp-server":
        udp_server(int(args[0]), args[1], float(args[2]))
    elif mode == "tcp-client":
        tcp_client(args[0], int(args[1]), float(args[2]))
    elif mode == "udp-session":
        udp_session(args[0], int(args[1]), float(args[2]))
    elif mode == "udp-client":
        udp_client(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit(f"unknown mode {mode}")


main()
