"""Writer of scenario (e) of `cargo bench --bench compare` (issue 8): a burst, then a paced load.

    python3 burst_writer.py DB SOCKET BURST_TX PACED_SECONDS PACED_RATE

DB is an existing, empty WAL database: this script creates the table. SOCKET is the daemon's
control socket, or "" for the run without a daemon (the /sync calls are then skipped).

The burst: BURST_TX single-row transactions (200-byte blob) as fast as the connection commits
them (`synchronous=NORMAL`, default `wal_autocheckpoint`), then `POST /sync` with wait. The paced
load: PACED_SECONDS at PACED_RATE transactions per second, with a waited `/sync` every 200 ms,
and one more at the end.

Phases are reported on stdout, one flushed line each, so the bench can sample the daemon's CPU
clock as it reads them:

    burst-start
    burst-synced BURST_TX BURST_SECONDS SYNC_SECONDS WAL_BYTES
    paced-start
    paced-end PACED_TX PACED_SECONDS WAL_BYTES

BURST_SECONDS is the burst alone, SYNC_SECONDS from its last commit to the waited /sync
returning; WAL_BYTES is the size of DB-wal at that point.
"""

import json
import os
import socket
import sqlite3
import sys
import time

SYNC_INTERVAL = 0.2


def sync_wait(sock, db):
    """POST /sync with wait over the daemon's Unix socket; raises unless it answers 200."""
    if not sock:
        return
    body = json.dumps({"path": db, "wait": True, "timeout": 120})
    request = (
        "POST /sync HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(180)
    s.connect(sock)
    s.sendall(request.encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = data.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise SystemExit("POST /sync answered %r" % data)
    if b'"synced"' not in data and b'"no_change"' not in data:
        raise SystemExit("POST /sync did not sync: %r" % data)


def report(*fields):
    print(*fields, flush=True)


def main():
    db, sock = sys.argv[1], sys.argv[2]
    burst_tx, paced_seconds, rate = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    wal = db + "-wal"

    conn = sqlite3.connect(db, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=wal").fetchone()[0]
    if mode != "wal":
        raise SystemExit("journal_mode is %r, not wal" % mode)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    blob = os.urandom(200)
    insert = "INSERT INTO t(v) VALUES (?)"

    report("burst-start")
    t0 = time.perf_counter()
    for _ in range(burst_tx):
        conn.execute(insert, (blob,))
    t1 = time.perf_counter()
    sync_wait(sock, db)
    t2 = time.perf_counter()
    report("burst-synced", burst_tx, t1 - t0, t2 - t1, os.path.getsize(wal))

    report("paced-start")
    start = time.perf_counter()
    end = start + paced_seconds
    next_sync = start + SYNC_INTERVAL
    interval = 1.0 / rate
    paced_tx = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if now >= next_sync:
            sync_wait(sock, db)
            next_sync += SYNC_INTERVAL
            continue
        # Paced against the start time: commits delayed by a /sync catch up afterwards.
        due = start + paced_tx * interval
        if now < due:
            time.sleep(min(due - now, 0.001))
            continue
        conn.execute(insert, (blob,))
        paced_tx += 1
    sync_wait(sock, db)
    report("paced-end", paced_tx, time.perf_counter() - start, os.path.getsize(wal))
    conn.close()


if __name__ == "__main__":
    main()
