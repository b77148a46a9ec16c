#!/usr/bin/env python3
"""A rate-limiting HTTP forwarder for bench/lazy: LISTEN_PORT UPSTREAM_HOST:PORT MB_PER_S.

It stands in for a site's network between the nodes and the registry: every response body is
sent at no more than MB_PER_S in all (one token bucket shared by all connections), and the
bytes of blob responses are counted in the file named by RATEPROXY_COUNT (rewritten as they
grow), so that the bench can say how much a start fetched before its command ended. With
RATEPROXY_LOG set, each request is appended to that file as "START_S END_S BYTES METHOD PATH
RANGE" (monotonic seconds): how many round trips a start makes, and how long each takes.
"""
import os, socket, sys, threading, time

port, upstream, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) * 1e6
uhost, uport = upstream.rsplit(":", 1)
count_file = os.environ.get("RATEPROXY_COUNT")
log_file = os.environ.get("RATEPROXY_LOG")
lock = threading.Lock()
state = {"next": time.monotonic(), "blob": 0, "written": 0.0}
# See `throttle`.
SLACK_S = 0.005


def throttle(n, first):
    """Returns when the link would have carried `n` more bytes. A response's first bytes wait
    for the link to be free (no credit for idle time); later ones are paced from where the
    previous ones ended, forgiving up to SLACK_S of this process's own time between them
    (Python's recv, sendall and wake-up per 64 KiB cost about as much as 64 KiB at
    200 MB/s, and are no part of a network): without that, the proxy carried 36 MB/s when
    told 200, and 20 when told 50."""
    with lock:
        now = time.monotonic()
        start = max(now if first else now - SLACK_S, state["next"])
        state["next"] = done = start + n / rate
    if done > now:
        time.sleep(done - now)


def count(n):
    """Adds blob bytes; the file is rewritten at most every 20 ms here, and at the end of
    each response (in `handle`), not per 64 KiB."""
    with lock:
        state["blob"] += n
        if time.monotonic() - state["written"] >= 0.02:
            write_count()


def write_count():
    state["written"] = time.monotonic()
    if count_file:
        with open(count_file + ".tmp", "w") as f:
            f.write(str(state["blob"]))
        os.replace(count_file + ".tmp", count_file)


def handle(client):
    begun, sent, what = time.monotonic(), 0, b"?"
    try:
        f = client.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = f.readline()
            if not line:
                return
            if line.lower().startswith(b"connection:"):
                continue
            if line == b"\r\n":
                head += b"connection: close\r\n"
            head += line
        first = head.split(b"\r\n", 1)[0]
        blob = b"/blobs/" in first
        rng = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"range:")]
        what = b" ".join(first.split(b" ")[:2] + rng[:1])
        length = 0
        for l in head.split(b"\r\n"):
            if l.lower().startswith(b"content-length:"):
                length = int(l.split(b":", 1)[1])
        up = socket.create_connection((uhost, int(uport)))
        up.sendall(head + (f.read(length) if length else b""))
        first = True
        while True:
            data = up.recv(262144)
            if not data:
                break
            throttle(len(data), first)
            first = False
            if blob:
                count(len(data))
            client.sendall(data)
            sent += len(data)
        up.close()
        if blob:
            with lock:
                write_count()
    except OSError:
        pass
    finally:
        client.close()
        if log_file:
            with lock, open(log_file, "a") as f:
                f.write(f"{begun:.4f} {time.monotonic():.4f} {sent} {what.decode(errors='replace')}\n")


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(128)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
