#!/usr/bin/env python3
"""Helpers for tests/systemd/run, standard library only.

  notify-listen PATH LOG      receive sd_notify datagrams on PATH, one line per
                              message appended to LOG (until SIGTERM)
  query SOCKET PATH [--references]
                              handshake as a Nix 2.26 client (protocol 1.37) and
                              ask IsValidPath (or QueryPathInfo's references);
                              prints the answer, exit 0 if the daemon answered
  query-every SOCKET PATH INTERVAL SECONDS
                              IsValidPath PATH on a new connection every INTERVAL
                              seconds for SECONDS, from this one process (no
                              process start per query, so gaps stay near
                              INTERVAL under load); prints "QUERIES FAILED
                              MAXGAP_MS", the gap being from one connection's
                              close to the next one's connect
  reg-pick REGISTRATION       print the number of paths, then a path that has
                              references, then its references (one per line)
  journal-check PATH          read `journalctl -o json` on stdin; check the
                              per-request fields; print a summary, exit 1 if
                              no request entry carries them all
  supervise SOCKET LOG -- CMD...
                              what a systemd .socket unit does: hold a listening
                              socket, start CMD with it as fd 3 (LISTEN_FDS=1,
                              LISTEN_PID=its pid) when a client is waiting, wait
                              for it to exit, repeat. One line per start/exit in LOG.
"""
import os, select, signal, socket, struct, subprocess, sys, time

# ---- sd_notify listener -------------------------------------------------------

def notify_listen(path, log):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(log, "a", buffering=1) as f:
        while True:
            data = s.recv(65536)
            for line in data.decode(errors="replace").split("\n"):
                if line:
                    f.write(f"{time.monotonic():.3f} {line}\n")

# ---- minimal worker-protocol client ----------------------------------------------

MAGIC1, MAGIC2 = 0x6E697863, 0x6478696F
STDERR_LAST, STDERR_ERROR, STDERR_NEXT = 0x616C7473, 0x63787470, 0x6F6C6D67
STDERR_START, STDERR_STOP, STDERR_RESULT = 0x53545254, 0x53544F50, 0x52534C54
VERSION = (1 << 8) | 37


class Conn:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def send(self, b):
        self.s.sendall(b)

    def read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("daemon closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def u64(self):
        return struct.unpack("<Q", self.read(8))[0]

    def str(self):
        n = self.u64()
        data = self.read(n)
        self.read((8 - n % 8) % 8)
        return data.decode(errors="replace")

    def strs(self):
        return [self.str() for _ in range(self.u64())]

    def stderr(self):
        while True:
            m = self.u64()
            if m == STDERR_LAST:
                return
            if m == STDERR_NEXT:
                print("log:", self.str(), file=sys.stderr)
            elif m == STDERR_ERROR:
                self.str(); self.u64(); self.str(); msg = self.str()
                if self.u64():
                    self.u64()  # position (unused by daemons)
                for _ in range(self.u64()):
                    self.u64(); self.str()
                raise RuntimeError("daemon error: " + msg)
            elif m == STDERR_START:
                self.u64(); self.u64(); self.u64(); self.str(); self.fields(); self.u64()
            elif m == STDERR_STOP:
                self.u64()
            elif m == STDERR_RESULT:
                self.u64(); self.u64(); self.fields()
            else:
                raise RuntimeError(f"unexpected stderr message {m:#x}")

    def fields(self):
        for _ in range(self.u64()):
            if self.u64() == 0:
                self.u64()
            else:
                self.str()


def p64(n):
    return struct.pack("<Q", n)


def pstr(s):
    b = s.encode()
    return p64(len(b)) + b + b"\0" * ((8 - len(b) % 8) % 8)


def query(sock, path, references, timeout=20.0):
    c = Conn(sock, timeout)
    try:
        return ask(c, path, references)
    finally:
        c.s.close()


def query_every(sock, path, interval, seconds):
    end = time.monotonic() + seconds
    n = failed = 0
    max_gap = 0.0
    closed = None
    while time.monotonic() < end:
        if closed is not None:
            time.sleep(max(0.0, interval - (time.monotonic() - closed)))
        t_connect = time.monotonic()
        if closed is not None:
            max_gap = max(max_gap, t_connect - closed)
        n += 1
        try:
            if query(sock, path, False) is not True:
                failed += 1
        except Exception as e:  # noqa: BLE001 - count and report any failure
            failed += 1
            print(f"query {n} failed: {type(e).__name__}: {e}", file=sys.stderr)
        closed = time.monotonic()
    print(n, failed, int(max_gap * 1000))


def ask(c, path, references):
    c.send(p64(MAGIC1))
    if c.u64() != MAGIC2:
        raise RuntimeError("bad daemon magic")
    c.u64()  # daemon version
    c.send(p64(VERSION) + p64(0) + p64(0))
    c.str()  # daemon's Nix version
    c.u64()  # trust
    c.stderr()
    if references:
        c.send(p64(26) + pstr(path))  # QueryPathInfo
        c.stderr()
        if not c.u64():
            return None
        c.str(); c.str()
        return c.strs()
    c.send(p64(1) + pstr(path))  # IsValidPath
    c.stderr()
    return bool(c.u64())

# ---- socket-unit emulation ----------------------------------------------------------


def supervise(path, log, cmd):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1024)
    child = None
    stopping = False

    def on_term(*_):
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.terminate()
    signal.signal(signal.SIGTERM, on_term)
    with open(log, "a", buffering=1) as f:
        while not stopping:
            try:
                r, _, _ = select.select([ls], [], [], 0.2)
            except InterruptedError:
                continue
            if not r:
                continue
            # The socket becomes fd 3; LISTEN_PID must be the daemon's own pid,
            # so sh exports its $$ and execs the daemon.
            fd = ls.fileno()
            move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
            child = subprocess.Popen(
                ["sh", "-c", move + 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", *cmd],
                pass_fds=(fd,),
            )
            f.write(f"{time.monotonic():.3f} start {child.pid}\n")
            rc = child.wait()
            f.write(f"{time.monotonic():.3f} exit {child.pid} {rc}\n")
            if stopping:
                break
            if rc != 0:
                time.sleep(0.5)  # do not spin on a failing daemon


def reg_pick(path):
    lines = open(path).read().split("\n")
    entries, i = [], 0
    while i < len(lines) and lines[i]:
        p, n = lines[i], int(lines[i + 4])
        entries.append((p, lines[i + 5:i + 5 + n]))
        i += 5 + n
    p, refs = next(((p, r) for p, r in entries if r and p not in r), entries[0])
    print(len(entries))
    print(p)
    print("\n".join(sorted(refs)))


FIELDS = ("OP", "STORE_PATH", "CLIENT_PID", "CLIENT_UID", "DURATION_US", "RESULT")


def journal_check(store_path):
    import json
    reqs = []
    for line in sys.stdin:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if "OP" in e:
            reqs.append(e)
    full = [e for e in reqs if all(f in e for f in FIELDS)]
    ok_entry = [e for e in full if e.get("STORE_PATH") == store_path]
    refused = [e for e in full if str(e.get("RESULT")).lower() not in ("ok", "success")]
    def show(e):
        return " ".join(f"{f}={e.get(f)}" for f in FIELDS + ("PRIORITY",))
    print(f"{len(reqs)} entries with OP, {len(full)} with all of {','.join(FIELDS)}")
    for e in (ok_entry[:1] + refused[:1]):
        print("  " + show(e))
    missing = [f for f in FIELDS if reqs and not all(f in e for e in reqs)]
    if missing:
        print("  fields missing from some OP entries: " + ",".join(missing))
    problems = []
    if not ok_entry:
        problems.append(f"no entry with all fields and STORE_PATH={store_path}")
    if not refused:
        problems.append("no refused/failed request logged with all fields")
    for e in full:
        for f in ("CLIENT_PID", "CLIENT_UID", "DURATION_US"):
            if not str(e[f]).isdigit():
                problems.append(f"{f}={e[f]!r} is not a number")
                break
    for p in problems:
        print("  problem: " + p)
    sys.exit(1 if problems else 0)


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "notify-listen":
        notify_listen(a[1], a[2])
    elif a[0] == "query":
        try:
            ans = query(a[1], a[2], "--references" in a[3:])
        except Exception as e:  # noqa: BLE001 - report any failure as one line
            print(f"query failed: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
        if isinstance(ans, list):
            print("\n".join(ans))
        else:
            print("valid" if ans else "invalid")
        sys.exit(0)
    elif a[0] == "query-every":
        query_every(a[1], a[2], float(a[3]), float(a[4]))
    elif a[0] == "reg-pick":
        reg_pick(a[1])
    elif a[0] == "journal-check":
        journal_check(a[1])
    elif a[0] == "supervise":
        i = a.index("--")
        supervise(a[1], a[2], a[i + 1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
