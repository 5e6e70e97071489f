# Opens COUNT HTTPS keep-alive connections (handshake + one GET each, so the proxy holds both
# legs), prints {"open": n} and keeps them idle until stdin closes or HOLD_S passes.
# Usage: idle_conns.py HOST PORT CAFILE PATH COUNT LIMIT_S HOLD_S
import json, socket, ssl, sys, time, select

host, port, cafile, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
count, limit, hold = int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
context = ssl.create_default_context(cafile=cafile)


def response_complete(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    raise RuntimeError("response without Content-Length")

deadline = time.monotonic() + limit
sockets, errors = [], []
while len(sockets) < count and time.monotonic() < deadline and len(errors) < 50:
    try:
        raw = socket.create_connection((host, port), timeout=5)
        tls = context.wrap_socket(raw, server_hostname=host)
        tls.sendall(request)
        data = b""
        while not response_complete(data):
            chunk = tls.recv(4096)
            if not chunk:
                raise RuntimeError("closed before the response")
            data += chunk
        sockets.append(tls)
    except Exception as error:
        errors.append(str(error))
print(json.dumps({"open": len(sockets), "errors": len(errors), "firstError": errors[0] if errors else None}), flush=True)
select.select([sys.stdin], [], [], hold)
for s in sockets:
    s.close()
