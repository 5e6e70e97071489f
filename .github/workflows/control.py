# Sends one line to the egress control socket and prints the reply (used by egress.yml).
import socket
import sys

client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.settimeout(10)
client.connect("/run/egress.sock")
client.sendall(" ".join(sys.argv[1:]).encode() + b"\n")
reply = b""
while chunk := client.recv(4096):
    reply += chunk
print(reply.decode().strip())
