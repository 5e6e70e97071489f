# Latency of a new HTTPS connection: TCP connect + full TLS handshake (no session resumption: a
# fresh SSLContext each time) + one GET with "Connection: close" read to EOF. Prints one JSON line
# with the times in ms. Bounded by count and by a wall-clock limit.
# Usage: new_conn.py HOST PORT CAFILE PATH WARMUP COUNT LIMIT_S
import json, socket, ssl, sys, time

host, port, cafile, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
warmup, count, limit = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
deadline = time.monotonic() + limit
times, errors = [], []

def one():
    context = ssl.create_default_context(cafile=cafile)
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(request)
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    elapsed = (time.perf_counter() - start) * 1000
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("unexpected response " + repr(data[:40]))
    return elapsed

for i in range(warmup + count):
    if time.monotonic() > deadline:
        break
    try:
        t = one()
        if i >= warmup:
            times.append(t)
    except Exception as error:  # counted, the loop goes on
        errors.append(str(error))
print(json.dumps({"times": times, "errors": len(errors), "firstError": errors[0] if errors else None}))
