"""Mixed load and crashes against a real ``shoplens serve``: nothing acknowledged is ever lost.

    python benchmarks/catalog_load.py --clients 4 --seconds 120 --cycles 20

On the repository's own index (``make demo`` builds it) and a throwaway state directory (the
demo's ``var/`` is not touched):

1. **load**: ``--clients`` threads for ``--seconds``, each mixing searches (shopper-photo
   benchmark JPEGs), additions and deletions of products; every answer other than the expected
   status, and every transport error, counts as an error. The server's resident memory is
   sampled each second (first and last 10% of the run reported: flat, or growing). Then a clean
   restart, and every acknowledged write is checked (added: present; deleted: absent).
2. **crash**: ``--cycles`` times, two writers and one searcher run while the server is killed
   with SIGKILL at a random instant; it is restarted and every acknowledged write checked.
   A request cut off by the kill promised nothing, either way.

Writes reports/benchmarks/catalog_load.json. Target (catalog-service issue): errors 0, lost 0.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from search_http import _free_port, _shopper_photos, _start_server  # this directory's

from shoplens.config import load_config


class Ledger:
    """What the server acknowledged: products it said it added, and ones it said it removed."""

    def __init__(self):
        self.lock, self.added, self.removed = threading.Lock(), set(), set()
        self.errors = self.requests = 0

    def missing(self, url: str) -> list[str]:
        """Acknowledged writes the server does not reflect (must be empty)."""
        wrong = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for pid in sorted(self.added | self.removed):
                status = http.get(f"/products/{pid}/similar", params={"k": 1}).status_code
                if status != (404 if pid in self.removed else 200):
                    wrong.append(pid)
        return wrong


def client_loop(url, token, photos, ledger: Ledger, stop: threading.Event, mix, seed) -> None:
    """Searches, additions and deletions in proportion ``mix`` until ``stop`` or the server dies."""
    rng, auth = np.random.default_rng(seed), {"Authorization": f"Bearer {token}"}
    mine: list[str] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            action = rng.choice(["search", "add", "delete"], p=mix)
            photo = photos[int(rng.integers(len(photos)))][1]
            pid, expected = None, 200
            try:
                if action == "search" or (action == "delete" and not mine):
                    answer = http.post("/search", files={"image": ("q.jpg", photo)})
                elif action == "add":
                    pid, expected = f"load-{uuid.uuid4().hex[:12]}", 201
                    form = {"product_id": pid, "category": "bag"}
                    answer = http.post("/products", files={"image": ("p.jpg", photo)},
                                       data=form, headers=auth)  # fmt: skip
                else:
                    pid = mine.pop(int(rng.integers(len(mine))))
                    with ledger.lock:  # in flight: its outcome is unknown until answered
                        ledger.added.discard(pid)
                    answer = http.delete(f"/products/{pid}", headers=auth)
            except httpx.TransportError:
                return
            with ledger.lock:
                ledger.requests += 1
                if answer.status_code != expected:
                    ledger.errors += 1
                elif action == "add":
                    ledger.added.add(pid)
                    mine.append(pid)
                elif pid is not None:
                    ledger.removed.add(pid)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/catalog_load.json"))
    args = parser.parse_args()
    cfg = load_config()
    photos = _shopper_photos(Path(cfg.paths.shopper_photos_dir), 200)
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "SHOPLENS_WRITE_TOKEN": token}
    with tempfile.TemporaryDirectory() as state:
        overrides = (f"search.state_dir={state}", "search.snapshot_every=200")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"

        def start():
            return _start_server(port, *overrides, writes=True, env=env)

        # 1. load
        ledger, server, stop = Ledger(), start(), threading.Event()
        threads = [threading.Thread(target=client_loop, args=(url, token, photos, ledger, stop,
                                    [0.7, 0.2, 0.1], i)) for i in range(args.clients)]  # fmt: skip
        for t in threads:
            t.start()
        memory, start_t = [], time.monotonic()
        while time.monotonic() - start_t < args.seconds:
            memory.append(rss_mb(server.pid))
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        server.terminate()
        server.wait(timeout=120)
        tenth = max(1, len(memory) // 10)
        server = start()
        load = {
            "clients": args.clients, "seconds": args.seconds, "requests": ledger.requests,
            "errors": ledger.errors, "acknowledged_writes": len(ledger.added | ledger.removed),
            "lost_after_restart": len(ledger.missing(url)),
            "rss_mb_first_10pct": float(np.mean(memory[:tenth])),
            "rss_mb_last_10pct": float(np.mean(memory[-tenth:])),
        }  # fmt: skip
        print(json.dumps(load), flush=True)

        # 2. crashes (the ledger carries over: earlier writes must survive every cycle too)
        rng, lost = np.random.default_rng(0), []
        for cycle in range(args.cycles):
            stop = threading.Event()
            mixes = ([0.0, 0.8, 0.2], [0.0, 0.8, 0.2], [1.0, 0.0, 0.0])
            threads = [threading.Thread(target=client_loop, args=(url, token, photos, ledger,
                                        stop, mix, 100 * cycle + i)) for i, mix in enumerate(mixes)]  # fmt: skip
            for t in threads:
                t.start()
            time.sleep(float(rng.uniform(0.5, 3.0)))
            server.send_signal(signal.SIGKILL)
            server.wait()
            stop.set()
            for t in threads:
                t.join()
            server = start()  # raises if the service cannot start again
            lost.append(len(ledger.missing(url)))
            print(f"cycle {cycle + 1}: acknowledged so far {len(ledger.added | ledger.removed)}, "
                  f"lost {lost[-1]}", flush=True)  # fmt: skip
        server.terminate()
        server.wait(timeout=120)
    result = {"load": load, "crash": {"cycles": args.cycles, "lost_per_cycle": lost,
              "acknowledged_writes": len(ledger.added | ledger.removed)}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result["crash"]))


if __name__ == "__main__":
    main()
