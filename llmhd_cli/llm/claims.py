"""Cross-process claims: two runs on one cache never pay twice for the same answer.

Within one process the client sends a request once however many of its threads want it. Two
processes sharing a cache dir (two ``llmhd summarize`` started together, a training run next to
a summarize) coordinate here: before paying for an uncached request the client *claims* its
cache key in ``<cache dir>/claims.sqlite``. A process that finds the key claimed waits; when
the holder releases it (after storing the answer) the waiter reads the answer from the cache.

A claim is a lease. Its holder renews every claim it holds every `HEARTBEAT` seconds, to
`LEASE` seconds ahead. A claim is dead, and may be taken over, when its lease has run out
(the holder stopped, hung as a whole or lost its disk) or when the holder ran on this host
and its process no longer exists (SIGKILL, a crash: taken over at once, without waiting for
the lease). The pid check is only a shortcut on the same host; the lease alone is what makes
a claim from another machine on a shared folder expire. A holder that waits a long time on a
slow server keeps its claim, since its heartbeat goes on: the waiter waits too, and pays
nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

CLAIMS_FILE = "claims.sqlite"
LEASE = 30.0  # seconds a claim lives without a heartbeat
HEARTBEAT = 5.0  # seconds between renewals of the claims a process holds
POLL_MIN, POLL_MAX = 0.05, 0.5  # a waiter's polling interval, growing while it waits


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists here (a zombie counts as alive until reaped)."""
    if sys.platform == "win32":
        return True  # no cheap check: rely on the lease
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class ClaimStore:
    """Claims on cache keys, shared by every process using one cache dir."""

    def __init__(self, cache_dir: Path, lease: float = LEASE, heartbeat: float = HEARTBEAT) -> None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / CLAIMS_FILE
        self.lease = lease
        self.heartbeat = heartbeat
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex}"  # two clients in one process differ too
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                         "host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL)")
        # Claims whose lease ran out an hour ago are dead for everyone: keep the table small.
        self._db.execute("DELETE FROM claims WHERE expires < ?", (time.time() - 3600,))
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.takeovers = 0  # dead claims this store took over (a holder was killed or hung)

    # ------------------------------------------------------------------ claiming

    def acquire(self, key: str) -> bool:
        """Claim ``key``; True when this store now holds it (also when a dead claim was taken over)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT owner, host, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
                if row is not None and row[0] != self.owner and not self._dead(row, now):
                    self._db.execute("COMMIT")
                    return False
                if row is not None and row[0] != self.owner:
                    self.takeovers += 1
                    log.info("claim on %s... of %s is dead; taking it over", key[:12], row[0].rsplit(":", 1)[0])
                self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                                 (key, self.owner, self.host, self.pid, now + self.lease))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._held.add(key)
        self._start_heartbeat()
        return True

    def release(self, key: str) -> None:
        """Give up ``key`` (after its answer was stored, or the call failed)."""
        with self._lock:
            self._held.discard(key)
            self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def wait(self, key: str, stop: threading.Event | None = None) -> bool:
        """Wait while another live holder has ``key``; False when ``stop`` was set first."""
        delay = POLL_MIN
        while True:
            with self._lock:
                row = self._db.execute("SELECT owner, host, pid, expires FROM claims WHERE key = ?",
                                       (key,)).fetchone()
            if row is None or row[0] == self.owner or self._dead(row, time.time()):
                return True
            if stop is not None:
                if stop.wait(delay):
                    return False
            else:
                time.sleep(delay)
            delay = min(POLL_MAX, delay * 1.5)

    def _dead(self, row: tuple, now: float) -> bool:
        _, host, pid, expires = row
        return expires < now or (host == self.host and pid != self.pid and not _alive(int(pid)))

    # ------------------------------------------------------------------ heartbeat

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._beat is not None or self._stop.is_set():
                return
            self._beat = threading.Thread(target=self._renew, name="llmhd-claims", daemon=True)
            self._beat.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                with self._lock:
                    if self._held:
                        self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                                         (time.time() + self.lease, self.owner))
            except sqlite3.Error as exc:  # a busy database: the next beat tries again, well within the lease
                log.debug("claim heartbeat failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with self._lock:
            try:
                self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            except sqlite3.Error:  # left behind, it expires with its lease
                pass
            self._held.clear()
            self._db.close()
