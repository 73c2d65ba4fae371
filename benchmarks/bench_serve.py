"""``genrekit serve`` under load: N concurrent clients posting clips to a server on loopback.

The server runs as its own process (``genrekit serve --port 0``), so that its peak memory is
its own (``VmHWM`` from /proc). ``--clients`` threads (default 16) each post
``--requests`` clips (default 8, one file a request, gtzan_mini's 30 s clips taken in turn)
to ``/v1/predict`` and time each answer. Printed: requests/s, p50/p95/p99 latency, errors
(any status but 200, by status: a full queue answers 503), the server's resident memory
before and at its peak, and, in the same run once the server is stopped, the CLI path's rate
over the same files in this process (``iter_predictions`` warm: batched as ``genrekit
predict`` is, and one file at a time), plus a check that the server's answers are
predict's to 1e-4 (results are rounded to 4 decimals).

    nice -n 10 python benchmarks/bench_serve.py [--model RUN] [--clients 16] [--requests 8]
        [--workers 2] [--queue 16] [--files 16] [--work DIR]

Without ``--model`` the default recipe is trained on gtzan_mini in ``--work`` (reused).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import GTZAN_MINI, ROOT, default_run


def _multipart(path: Path) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _start(run: Path, workers: int, queue: int) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "genrekit", "serve", "--model", str(run), "--port", "0",
                             "--workers", str(workers), "--queue", str(queue)],
                            stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while time.time() - t0 < 300:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise SystemExit(f"the server did not start (exit {proc.returncode})")
        if "genrekit serve:" in line and "http://" in line:
            return proc, int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])
    raise SystemExit("the server did not start in 300 s")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))]


def _cli_rates(run: Path, files: list[Path]) -> tuple[dict, list[dict]]:
    """files/s of the CLI path in this process (warm): batched as ``genrekit predict`` is, and
    one file at a time; and the batched results."""
    from threadpoolctl import threadpool_limits

    from genrekit.predict import iter_predictions
    from genrekit.runs import Run

    r = Run(run)
    r.model()
    list(iter_predictions([str(files[0])], r))  # warm
    rates, results = {}, None
    for name, batch in (("batched", True), ("one file at a time", False)):
        t0 = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            out = list(iter_predictions([str(f) for f in files], r, batch=batch))
        rates[name] = len(files) / (time.perf_counter() - t0)
        results = results or out
    return rates, results


def _fmt_rates(rates: dict) -> str:
    return ", ".join(f"{k} {v:.2f} files/s" for k, v in rates.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="run folder (default: the default recipe on gtzan_mini)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=8, help="requests per client")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--files", type=int, default=16, help="distinct gtzan_mini clips posted in turn")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from genrekit.cli import quiet_libraries

    quiet_libraries()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-serve-"))
    run = Path(a.model) if a.model else default_run(work)
    every = sorted(GTZAN_MINI.rglob("*.wav"))
    files = every[:: max(1, len(every) // a.files)][:a.files]
    if not files:
        raise SystemExit(f"no clips under {GTZAN_MINI}")
    bodies = [_multipart(f) for f in files]
    print(f"run {run.name}; {len(files)} clips of gtzan_mini; {a.clients} clients x {a.requests} requests; "
          f"--workers {a.workers} --queue {a.queue}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f} (other users of the machine count)")
    before, results = _cli_rates(run, files)
    print(f"CLI path before the server (in this process, warm, same clips): {_fmt_rates(before)}")

    proc, port = _start(run, a.workers, a.queue)
    answers: dict[int, dict] = {}
    lock = threading.Lock()

    def client(c: int, n: int, lat: list, status: dict):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for i in range(n):
            k = (c * n + i) % len(files)
            body, ctype = bodies[k]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": ctype})
                r = conn.getresponse()
                data = r.read()
                code = r.status
            except OSError as exc:
                code, data = f"{type(exc).__name__}", b""
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            dt = time.perf_counter() - t0
            with lock:
                status[code] = status.get(code, 0) + 1
                if code == 200:
                    lat.append(dt)
                    answers.setdefault(k, json.loads(data)["results"][0])
        conn.close()

    try:
        rss0 = _kib(proc.pid, "VmRSS")
        client(0, 1, [], {})  # one warm request (the server compiled its calls at start; this is the HTTP path)
        seq_lat: list = []
        t0 = time.perf_counter()
        client(0, len(files), seq_lat, {})
        seq = len(seq_lat) / (time.perf_counter() - t0)
        lat, status = [], {}
        threads = [threading.Thread(target=client, args=(c, a.requests, lat, status)) for c in range(a.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        peak = _kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)
    ok = status.get(200, 0)
    errors = {k: v for k, v in status.items() if k != 200}
    print(f"server, 1 client in turn: {seq:.2f} requests/s, latency p50 {_pct(seq_lat, 50):.2f} s")
    print(f"server, {a.clients} clients at once: {ok} answered in {wall:.1f} s = {ok / wall:.2f} requests/s "
          f"(files/s); latency p50 {_pct(lat, 50):.2f} s, p95 {_pct(lat, 95):.2f} s, p99 {_pct(lat, 99):.2f} s; "
          f"errors {sum(errors.values())}{' ' + json.dumps(errors) if errors else ''}")
    print(f"server memory: {rss0 / 1024:.0f} MB resident after start, peak {peak / 1024:.0f} MB")
    after, _ = _cli_rates(run, files)
    print(f"CLI path after the server: {_fmt_rates(after)}; load average {os.getloadavg()[0]:.1f}")
    mean_batched = (before["batched"] + after["batched"]) / 2
    print(f"server at once / CLI batched (mean of before and after) = {ok / wall / mean_batched:.2f}")
    worst = 0.0
    for k, ans in answers.items():
        want = {t["genre"]: t["probability"] for t in results[k]["top"]}
        got = {t["genre"]: t["probability"] for t in ans["top"]}
        assert list(want) == list(got), (files[k], got, want)
        worst = max(worst, max(abs(got[g] - want[g]) for g in want))
    print(f"server answers vs predict: same top genres for {len(answers)} clips, max |dp| {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
