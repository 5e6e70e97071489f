# Control-socket test client: sends argv[2] (unless "--silent") to the Unix socket argv[1] and prints
# the one-line reply. "--silent" connects, sends nothing and waits for the server to give up.
import socket
import sys

path, request = sys.argv[1], sys.argv[2]
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.settimeout(20)
client.connect(path)
if request != "--silent":
    client.sendall(request.encode() + b"\n")
reply = b""
while True:
    chunk = client.recv(4096)
    if not chunk:
        break
    reply += chunk
sys.stdout.write(reply.decode())
