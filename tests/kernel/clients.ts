// Client and server programs the kernel tests run inside test namespaces. Not a test file itself.
import { client, type ClientOptions, jsonOf, type Output, type TestNetns } from "./kernel_helpers.ts";

/** python3 client: prints {"pid", "port"} or {"pid", "errno"} as its last line. */
export const PYTHON_CLIENT = String.raw`
import json, os, socket, sys
mode, args = sys.argv[1], sys.argv[2:]
def out(**fields):
    fields["pid"] = os.getpid()
    print(json.dumps(fields), flush=True)
def errno_of(action):
    try:
        action()
        return 0
    except OSError as error:
        return error.errno
def maybe_bind(s, family, index):
    if len(args) > index:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0" if family == socket.AF_INET else "::", int(args[index])))
if mode == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    maybe_bind(s, socket.AF_INET, 2)
    s.connect((args[0], int(args[1])))
    port = s.getsockname()[1]
    s.recv(100)
    s.close()
    out(port=port)
elif mode == "mptcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    s.connect((args[0], int(args[1])))
    port = s.getsockname()[1]
    s.recv(100)
    s.close()
    out(port=port)
elif mode == "mptcp6-errno":
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, 262)
    s.settimeout(3)
    out(errno=errno_of(lambda: s.connect((args[0], int(args[1])))))
elif mode == "tcp6":
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.connect((args[0], int(args[1])))
    port = s.getsockname()[1]
    s.recv(100)
    s.close()
    out(port=port)
elif mode == "udp-connected":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    maybe_bind(s, socket.AF_INET, 2)
    s.connect((args[0], int(args[1])))
    s.send(b"egress")
    out(port=s.getsockname()[1])
elif mode == "udp-sendto":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"egress", (args[0], int(args[1])))
    out(port=s.getsockname()[1])
elif mode == "udp6-connected":
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.connect((args[0], int(args[1])))
    s.send(b"egress")
    out(port=s.getsockname()[1])
elif mode == "udp6-sendto":
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"egress", (args[0], int(args[1])))
    out(port=s.getsockname()[1])
elif mode == "connect6-errno":
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(3)
    out(errno=errno_of(lambda: s.connect((args[0], int(args[1])))))
elif mode == "tfo6-errno":
    # TCP Fast Open: the connect happens inside sendto(MSG_FASTOPEN).
    # Blocking: with a timeout Python makes the socket non-blocking and sendto says EINPROGRESS.
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    out(errno=errno_of(lambda: s.sendto(b"egress", 0x20000000, (args[0], int(args[1])))))
elif mode == "sendto6-errno":
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    out(errno=errno_of(lambda: s.sendto(b"egress", (args[0], int(args[1])))))
elif mode == "rthdr6-errno":
    # UDP "to ::1" with a segment routing header whose next segment is args[0]: the packet's wire
    # destination is args[0] (IPV6_RTHDR needs no privilege).
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    segments = socket.inet_pton(socket.AF_INET6, "::1") + socket.inet_pton(socket.AF_INET6, args[0])
    s.setsockopt(socket.IPPROTO_IPV6, 57, bytes([0, 4, 4, 1, 1, 0, 0, 0]) + segments)
    out(errno=errno_of(lambda: s.sendto(b"egress", ("::1", int(args[1])))))
elif mode == "accept6":
    # Listens on [::]:args[0] for args[1] seconds; reports whether a connection was accepted.
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(args[0])))
    s.listen(8)
    s.settimeout(float(args[1]))
    try:
        s.accept()[0].close()
        out(accepted=1)
    except socket.timeout:
        out(accepted=0)
elif mode == "connect6-retry-errno":
    # connect6-errno that waits (up to 3 s) for a listener that is still starting.
    import time
    result = None
    for attempt in range(30):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(1.5)
        result = errno_of(lambda: s.connect((args[0], int(args[1]))))
        s.close()
        if result != 111:
            break
        time.sleep(0.1)
    out(errno=result)
elif mode == "capture-rthdr":
    # Root only: counts IPv6 frames carrying a routing header seen on interface args[0] for
    # args[1] seconds; prints "ready" once the capture socket is bound.
    import time
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    s.bind((args[0], 0))
    print("ready", flush=True)
    end, count = time.time() + float(args[1]), 0
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            frame = s.recv(4096)
        except socket.timeout:
            break
        if len(frame) > 20 and frame[20] == 43:
            count += 1
    out(count=count)
elif mode == "bind-errno":
    # bind-errno tcp|udp|mptcp HOST PORT [reuseport]: errno of bind() (IPv6 socket when HOST has ":").
    family = socket.AF_INET6 if ":" in args[1] else socket.AF_INET
    kind = socket.SOCK_DGRAM if args[0] == "udp" else socket.SOCK_STREAM
    s = socket.socket(family, kind, 262 if args[0] == "mptcp" else 0)
    if len(args) > 3:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    out(errno=errno_of(lambda: s.bind((args[1], int(args[2])))))
elif mode == "autobind-port":
    # listen() on an unbound TCP socket: the kernel picks a port without the bind hook.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.listen(1)
    out(port=s.getsockname()[1])
elif mode == "socket-errno":
    family, kind, proto = (int(value, 0) for value in args)
    out(errno=errno_of(lambda: socket.socket(family, kind, proto).close()))
`;

/** Node client: TCP connect or unconnected UDP send; prints {"pid", "port"}. */
export const NODE_CLIENT = String.raw`
const [mode, host, port] = process.argv.slice(1);
const out = (fields) => console.log(JSON.stringify({ ...fields, pid: process.pid }));
if (mode === "tcp") {
  const net = require("net");
  const socket = net.connect({ host, port: Number(port) }, () => {
    out({ port: socket.localPort });
    socket.destroy();
  });
} else {
  const socket = require("dgram").createSocket("udp4");
  socket.send("egress", Number(port), host, () => {
    out({ port: socket.address().port });
    socket.close();
  });
}
`;

/** TCP server (root, outside the test cgroup): answers HTTP and logs what each accept saw. */
const SERVER = String.raw`
import json, select, socket, sys
log = open(sys.argv[1], "a", buffering=1)
listeners = []
for spec in sys.argv[2:]:
    host, port = spec.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host.strip("[]"), int(port)))
    s.listen(128)
    listeners.append(s)
print("listening", flush=True)
while True:
    ready, _, _ = select.select(listeners, [], [])
    for s in ready:
        c, peer = s.accept()
        log.write(json.dumps({"peer": list(peer[:2]), "local": list(c.getsockname()[:2])}) + "\n")
        try:
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        c.close()
`;

export interface Client {
  pid: number;
  port: number;
  errno?: number | null;
  accepted?: number;
  count?: number;
}

export async function python(options: ClientOptions, args: string[]): Promise<Client & { output: Output }> {
  const output = await client(options, ["/usr/bin/python3", "-c", PYTHON_CLIENT, ...args]);
  const parsed = jsonOf<Client>(output);
  if (parsed.pid !== output.pid) throw new Error(`python reported pid ${parsed.pid}, spawned ${output.pid}`);
  return { ...parsed, output };
}

export async function node(options: ClientOptions, args: string[]): Promise<Client> {
  const output = await client(options, ["/usr/bin/node", "-e", NODE_CLIENT, ...args]);
  const parsed = jsonOf<Client>(output);
  if (parsed.pid !== output.pid) throw new Error(`node reported pid ${parsed.pid}, spawned ${output.pid}`);
  return parsed;
}

/** curl to an http URL; the pid is curl's own (every wrapper execs). */
export async function curl(options: ClientOptions, url: string): Promise<Client> {
  const output = await client(options, [
    "/usr/bin/curl",
    "-s",
    "-o",
    "/dev/null",
    "--max-time",
    "5",
    "-w",
    "%{local_port}",
    url,
  ]);
  const port = Number(output.stdout.trim());
  if (output.code !== 0 || !port) {
    throw new Error(`curl failed (${output.code}): ${output.stdout} ${output.stderr}`);
  }
  return { pid: output.pid, port };
}

export interface Accept {
  peer: [string, number];
  local: [string, number];
}

/** A running SERVER in a netns; stop() kills it. */
export class Server {
  private constructor(readonly child: Deno.ChildProcess, readonly logPath: string) {}

  static async start(netns: TestNetns, logPath: string, listen: string[]): Promise<Server> {
    const child = new Deno.Command("nsenter", {
      args: [`--net=${netns.path}`, "/usr/bin/python3", "-c", SERVER, logPath, ...listen],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    if (!value || !new TextDecoder().decode(value).includes("listening")) {
      child.kill("SIGKILL");
      throw new Error("test server did not start");
    }
    return new Server(child, logPath);
  }

  accepts(): Accept[] {
    try {
      return Deno.readTextFileSync(this.logPath).split("\n").filter(Boolean).map((line) => JSON.parse(line));
    } catch {
      return [];
    }
  }

  async stop(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    await this.child.stdout.cancel().catch(() => {});
    await this.child.status;
    await Deno.remove(this.logPath).catch(() => {});
  }
}
