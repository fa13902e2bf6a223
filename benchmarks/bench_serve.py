"""Load on `ncf serve`: a Netflix-shaped model, 50 concurrent clients, p50 / p99 and requests/s.

Builds a run directory of that shape (17,770 items, 480,189 users; GMF, MLP and NeuMF with
random weights: a latency does not depend on what the weights learned), starts
``ncf serve`` on 127.0.0.1 and, for each endpoint in turn, keeps ``--clients`` keep-alive
connections busy for ``--seconds``: known-user top-10, a new user folded in from 10 items,
similar items. Each endpoint runs twice: closed loop (every client sends its next request
as soon as the last is answered: the server's capacity, and latency = clients / throughput)
and open loop at a fixed offered rate (``--rates``; requests due at Poisson times, latency
counted from the time each was due): the latency at that load. Every request goes to
127.0.0.1 only; each phase stops by itself.

It prints latency percentiles, requests/s and error counts per endpoint, the server's
memory at the start and end of each phase, the cores each server process used (an idle
worker shows there), and how busy the machine was meanwhile with other work (CPU time of
processes other than the server and this script, in cores), so a noisy measurement says so.

Usage::

    python benchmarks/bench_serve.py [--seconds 30] [--clients 50] [--model neumf]
                                     [--users 480189] [--items 17770] [--out result.json]
                                     [--rates known=300,fold=100,similar=300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncf.interactions import Interactions
from ncf.models import GMF, MLP, NeuMF
from ncf.recommend import NCFRecommender
from ncf.runs import save_catalog, write_json

HOST = "127.0.0.1"


def build_run(out: Path, n_users: int, n_items: int, per_user: int, factors: int,
              seed: int = 0) -> dict[str, Any]:
    """A run directory of the given shape: three models, titles, ``per_user`` seen items each."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pop = rng.zipf(1.3, size=n_items).astype(np.float64)
    pop /= pop.sum()
    counts = rng.integers(max(1, per_user // 4), per_user * 7 // 4 + 1, size=n_users)
    users = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    items = rng.choice(n_items, size=len(users), p=pop).astype(np.int32)
    seen = Interactions(users, items, None, None, n_users, n_items,
                        np.arange(1, n_users + 1, dtype=np.int64) * 5,
                        np.arange(1, n_items + 1, dtype=np.int64))
    (out / "models").mkdir(parents=True, exist_ok=True)
    for model in (GMF(n_users, n_items, factors), MLP(n_users, n_items, factors, 3),
                  NeuMF(n_users, n_items, factors, 3)):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "user" in name or "item" in name:
                    p.normal_(0, 0.3)
        NCFRecommender.from_trained(model.eval(), seen).save(out / "models" / f"{model.kind}.npz")
    from ncf.synth import _titles

    save_catalog(out / "catalog.npz", seen.item_raw,
                 np.array(_titles(n_items, rng)), rng.integers(1920, 2006, size=n_items))
    write_json(out / "config.json", {"data": {"path": "synthetic Netflix shape",
                                              "synthetic": True}})
    return {"users": n_users, "items": n_items, "interactions": int(len(users))}


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (the worker processes of ``--workers``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its workers, MB."""
    total = 0
    for p in family(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def cpu_by_process(pid: int) -> dict[int, float]:
    """CPU seconds used so far by the server and by each of its workers."""
    out = {}
    for p in family(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out



def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine so far (all cores)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in parts]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def client(port: int, make: Any, stop_at: float, lat: list[float],
                 statuses: dict[int, int]) -> None:
    """One keep-alive connection sending requests back to back until ``stop_at``."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < stop_at:
            request = make()
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def paced_client(port: int, make: Any, stop_at: float, rate: float, rng: random.Random,
                       lat: list[float], statuses: dict[int, int]) -> None:
    """One keep-alive connection sending at Poisson times ``rate`` requests/s on average
    (open loop). A request's latency counts from the time it was due, not from when the
    connection was free to send it: a slow answer delays the next request, and that wait is
    counted (no coordinated omission). A connection the server closed while idle (uvicorn's
    keep-alive timeout) is opened again, as a browser would."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        due = time.perf_counter() + rng.expovariate(rate)
        while due < stop_at:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            request = make()
            for attempt in (0, 1):
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    if attempt:
                        raise
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
            status = int(head[9:12])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            lat.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
            due += rng.expovariate(rate)
    finally:
        writer.close()


def requests_for(kind: str, port: int, users: np.ndarray, items: np.ndarray, model: str,
                 seed: int) -> Any:
    rng = random.Random(seed)
    host = f"Host: {HOST}:{port}\r\n".encode()

    def known() -> bytes:
        u = users[rng.randrange(len(users))]
        return (f"GET /api/users/{u}/recommendations?k=10&model={model} HTTP/1.1\r\n".encode()
                + host + b"\r\n")

    def fold() -> bytes:
        given = [int(items[rng.randrange(len(items))]) for _ in range(10)]
        body = json.dumps({"items": given, "k": 10, "model": model}).encode()
        return (b"POST /api/recommendations HTTP/1.1\r\n" + host +
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def similar() -> bytes:
        i = items[rng.randrange(len(items))]
        return (f"GET /api/items/{i}/similar?k=10&model={model} HTTP/1.1\r\n".encode() + host
                + b"\r\n")

    return {"known-user top-10": known, "fold-in from 10 items": fold,
            "similar items": similar}[kind]


async def phase(kind: str, port: int, pid: int, args: argparse.Namespace, users: np.ndarray,
                items: np.ndarray, seconds: float, rate: float | None = None) -> dict[str, Any]:
    """``args.clients`` connections on one endpoint for ``seconds``: back to back (closed
    loop) when ``rate`` is None, else ``rate`` requests/s in all (open loop)."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    rss0 = rss_mb(pid)
    busy0, each0, me0 = machine_busy_seconds(), cpu_by_process(pid), time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    if rate is None:
        tasks = [client(port, requests_for(kind, port, users, items, args.model, seed),
                        stop_at, lat, statuses) for seed in range(args.clients)]
    else:
        tasks = [paced_client(port, requests_for(kind, port, users, items, args.model, seed),
                              stop_at, rate / args.clients, random.Random(1000 + seed), lat,
                              statuses) for seed in range(args.clients)]
    rss_series = []

    async def sample() -> None:
        while time.perf_counter() < stop_at:
            rss_series.append(rss_mb(pid))
            await asyncio.sleep(1.0)

    await asyncio.gather(*tasks, sample())
    wall = time.perf_counter() - t0
    busy = machine_busy_seconds() - busy0
    each = {p: c - each0.get(p, 0.0) for p, c in cpu_by_process(pid).items()}
    server_cpu, my_cpu = sum(each.values()), time.process_time() - me0
    a = np.array(lat) * 1000
    return {
        "endpoint": kind, "load": "closed loop" if rate is None else f"{rate:g} req/s offered",
        "requests": len(lat), "seconds": wall,
        "requests_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(v for k, v in statuses.items() if k >= 400),
        "rss_mb_start": rss0, "rss_mb_end": rss_mb(pid),
        "rss_mb_max": max(rss_series + [rss0]),
        "server_cores": server_cpu / wall, "client_cores": my_cpu / wall,
        "cores_by_process": [round(c / wall, 3) for c in each.values()],
        "server_cpu_ms_per_request": 1000 * server_cpu / max(len(lat), 1),
        "other_cores": max(0.0, (busy - server_cpu - my_cpu) / wall),
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--model", default="neumf", help="model the requests name")
    p.add_argument("--users", type=int, default=480_189)
    p.add_argument("--items", type=int, default=17_770)
    p.add_argument("--per-user", type=int, default=40, help="mean items seen per user")
    p.add_argument("--factors", type=int, default=16)
    p.add_argument("--run", help="reuse this run directory (built there when missing)")
    p.add_argument("--endpoints", default="known,fold,similar")
    p.add_argument("--workers", type=int, default=1, help="server processes (ncf serve --workers)")
    p.add_argument("--slots", type=int, default=None, help="ncf serve --slots (default: its own)")
    p.add_argument("--rates", default="known=300,fold=100,similar=300",
                   help="after each endpoint's closed-loop phase, an open-loop one at this many "
                   "requests/s in all (latency counted from when each request was due); '' for "
                   "none")
    p.add_argument("--open-only", action="store_true", help="skip the closed-loop phases")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    rates = {k: float(v) for k, v in (x.split("=") for x in args.rates.split(",") if x)}
    torch.set_num_threads(1)
    tmp = None
    if args.run:
        run = Path(args.run)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ncf-bench-serve-")
        run = Path(tmp.name) / "run"
    if not (run / "models" / "neumf.npz").exists():
        t = time.perf_counter()
        shape = build_run(run, args.users, args.items, args.per_user, args.factors)
        print(f"built a run of {shape['users']:,} users x {shape['items']:,} items "
              f"({shape['interactions']:,} seen) in {time.perf_counter() - t:.0f}s", flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from ncf.cli import main; "
                             "sys.exit(main())", "serve", str(run), "--host", HOST, "--port", "0",
                             "--workers", str(args.workers),
                             *(["--slots", str(args.slots)] if args.slots else [])],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    start_seconds = time.perf_counter() - t
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        proc.kill()
        print(f"the server did not start: {line!r}", file=sys.stderr)
        return 1
    port = int(match.group(1))
    print(line.strip())
    print(f"started (URL printed) in {start_seconds:.1f}s", flush=True)
    rng = np.random.default_rng(1)
    users = rng.choice(np.arange(1, args.users + 1) * 5, size=10_000)
    items = rng.choice(np.arange(1, args.items + 1), size=10_000)
    kinds = {"known": "known-user top-10", "fold": "fold-in from 10 items",
             "similar": "similar items"}
    results = []
    try:
        for key in args.endpoints.split(","):
            asyncio.run(phase(kinds[key], port, proc.pid, args, users, items, 2.0))  # warm-up
            loads = ([] if args.open_only else [None]) + (
                [rates[key]] if rates.get(key) else [])
            for rate in loads:
                r = asyncio.run(phase(kinds[key], port, proc.pid, args, users, items,
                                      args.seconds, rate))
                results.append(r)
                print(f"{r['endpoint']:22s} {r['load']:19s} {r['requests_per_s']:7.1f} req/s  "
                      f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  errors "
                      f"{r['errors']}  RSS {r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} MB "
                      f"(max {r['rss_mb_max']:.0f})  cores: server {r['server_cores']:.2f}, "
                      f"clients {r['client_cores']:.2f}, other work {r['other_cores']:.2f} "
                      f"(by process: {' '.join(f'{c:.2f}' for c in r['cores_by_process'])}); "
                      f"server CPU {r['server_cpu_ms_per_request']:.2f} ms per request",
                      flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if tmp is not None:
            tmp.cleanup()
    summary = {"model": args.model, "clients": args.clients, "seconds": args.seconds,
               "start_seconds": start_seconds, "cpus": os.cpu_count(), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
