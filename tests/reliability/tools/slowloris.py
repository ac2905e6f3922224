"""Slowloris client for tests/reliability/test_slowloris.py, run as its own process so
that its work does not share a GIL with the latency measurements.

    python slowloris.py PORT CONNS DURATION [--rate BYTES_PER_SECOND]

Opens CONNS connections, sends each a request line (`GET /r HTTP/1.1\\r\\nHost: ...\\r\\n`)
and then header bytes, one byte per connection every 1/rate seconds, never finishing the
head. A connection the server closes is counted (with when it was closed, relative to
its opening) and opened again, as an attacker would. Prints `READY n` once all are open,
then one JSON line with the counts when DURATION is over.
"""

import argparse
import json
import os
import resource
import selectors
import socket
import sys
import time

HEAD = b"GET /r?id=slow&n=10 HTTP/1.1\r\nHost: reliability.test\r\n"
TRICKLE = b"X-Slowloris-Padding: " + b"a" * 40 + b"\r\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("conns", type=int)
    ap.add_argument("duration", type=float)
    ap.add_argument("--rate", type=float, default=1.0, help="bytes per second per connection")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.conns + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))

    sel = selectors.DefaultSelector()
    conns = {}  # fd -> [sock, opened_at, bytes_sent]
    stats = {"opened": 0, "reopened": 0, "connect_errors": 0, "closed_by_server": 0, "reset_by_server": 0,
             "send_errors": 0, "bytes_sent": 0, "lifetimes_closed": [], "answers": 0, "answer_samples": []}

    def open_one():
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
        except OSError as e:
            stats["connect_errors"] += 1
            stats.setdefault("connect_error_samples", []).append(repr(e)) if stats["connect_errors"] <= 5 else None
            return False
        s.setblocking(False)
        try:
            s.send(HEAD)
        except OSError:
            s.close()
            stats["send_errors"] += 1
            return False
        conns[s.fileno()] = [s, time.monotonic(), 0]
        sel.register(s, selectors.EVENT_READ)
        stats["opened"] += 1
        return True

    def drop(fd, why):
        s, opened, _ = conns.pop(fd)
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        stats[why] += 1
        stats["lifetimes_closed"].append(round(time.monotonic() - opened, 1))

    t0 = time.monotonic()
    while len(conns) < a.conns and time.monotonic() - t0 < 60:
        open_one()
    print(f"READY {len(conns)}", flush=True)

    end = time.monotonic() + a.duration
    interval = 1.0 / a.rate
    next_tick = time.monotonic()
    max_open = len(conns)
    while time.monotonic() < end:
        # Server-side closes (EOF / RST) and anything it answers.
        for key, _ in sel.select(timeout=max(0.0, min(next_tick, end) - time.monotonic())):
            fd = key.fd
            if fd not in conns:
                continue
            try:
                d = conns[fd][0].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                drop(fd, "reset_by_server")
                continue
            if not d:
                drop(fd, "closed_by_server")
            else:
                stats["answers"] += 1
                if len(stats["answer_samples"]) < 3:
                    stats["answer_samples"].append(d[:200].decode("latin-1"))
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + interval
            for fd, c in list(conns.items()):
                s, _, sent = c
                b = TRICKLE[sent % len(TRICKLE) : sent % len(TRICKLE) + 1]
                try:
                    n = s.send(b)
                except BlockingIOError:
                    continue
                except OSError:
                    drop(fd, "send_errors")
                    continue
                c[2] += n
                stats["bytes_sent"] += n
            # Reopen what the server closed, as an attacker would.
            while len(conns) < a.conns and time.monotonic() < end:
                if not open_one():
                    break
                stats["reopened"] += 1
            max_open = max(max_open, len(conns))
    lt = sorted(stats.pop("lifetimes_closed"))
    stats["closed_lifetime_s"] = {"n": len(lt), "min": lt[0], "median": lt[len(lt) // 2], "max": lt[-1]} if lt else {"n": 0}
    stats["open_at_end"] = len(conns)
    stats["max_open"] = max_open
    stats["pid"] = os.getpid()
    print(json.dumps(stats), flush=True)
    for c in conns.values():
        c[0].close()


if __name__ == "__main__":
    sys.exit(main())
