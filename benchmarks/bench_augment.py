"""Benchmark `genrekit augment` against a naive single-process loop doing the same work.

Each mode renders the same tracks with the default augmentations (time stretch x1.25/x0.85,
pitch +2/-1, frequency and time masks; train split only, originals for all) into mel PNGs,
in its own subprocess so that its peak memory is measured alone: the largest resident set of
one process (the mode's process or one of its workers, from wait4) and, sampled four times a
second, the proportional set size of the whole process tree summed (shared pages counted once):

    naive      a plain loop: load, augment, mel, save PNG
    genrekit1  genrekit's stage with --workers 1
    genrekit2  genrekit's stage with --workers 2

Prints clips/s, CPU seconds (user + system, workers included) and both peaks for each, and
the ratios genrekit2/naive (target >= 3 on two cores) and genrekit1/naive (target >= 1.5);
the CPU-seconds ratio shows the work saved even when other jobs take the cores. The naive loop is the straightforward per-clip,
per-variant computation (a waveform per variant through audiomentations, a mel spectrogram per
variant); genrekit renders the stretch / pitch variants from the original's STFT and the masks
from the original's spectrogram (see data_tools/augment.py).

    python benchmarks/bench_augment.py [--data ../shared/data/gtzan_mini/genres] [--per-genre N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "gtzan_mini" / "genres"


def subset(data: Path, per_genre: int | None, dest: Path) -> Path:
    if not per_genre:
        return data
    for g in sorted(d for d in data.iterdir() if d.is_dir()):
        (dest / g.name).mkdir(parents=True)
        for f in sorted(g.iterdir())[:per_genre]:
            os.symlink(f, dest / g.name / f.name)
    return dest


def naive(data: Path, out: Path) -> int:
    """What a user would write by hand: the same split, variants and image maths, one process."""
    import audiomentations as am
    import librosa
    import numpy as np
    from PIL import Image

    from genrekit.data_tools.catalogue import find_tracks
    from genrekit.data_tools.splits import stratified_split

    tracks = find_tracks(data)
    split = stratified_split(tracks, (0.7, 0.2, 0.1), seed=0).assignment
    rng = np.random.default_rng(0)
    n = 0
    for t in tracks:
        y, sr = librosa.load(t.path, sr=22050)
        variants = [("original", None)]
        if split[t.track_id] == "train":
            variants += [(f"stretch{r}", am.TimeStretch(min_rate=r, max_rate=r, leave_length_unchanged=False, p=1))
                         for r in (1.25, 0.85)]
            variants += [(f"pitch{s}", am.PitchShift(min_semitones=s, max_semitones=s, p=1)) for s in (2, -1)]
            variants += [("freqmask", "f"), ("timemask", "t")]
        for name, aug in variants:
            z = aug(samples=y, sample_rate=sr) if callable(aug) else y
            L = 30 * sr
            z = np.pad(z, (0, max(0, L - len(z))), mode="wrap")[:L]
            S = librosa.power_to_db(librosa.feature.melspectrogram(y=z, sr=sr, n_fft=2048, hop_length=512,
                                                                   n_mels=128), ref=1.0, top_db=80)
            if aug in ("f", "t"):
                axis_len = S.shape[0] if aug == "f" else S.shape[1]
                w = int(rng.integers(1, 31 if aug == "f" else 41))
                s0 = int(rng.integers(0, axis_len - w))
                if aug == "f":
                    S[s0:s0 + w] = S.mean()
                else:
                    S[:, s0:s0 + w] = S.mean()
            img = np.clip((S - S.max()) / 80 + 1, 0, 1)[::-1]
            im = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F").resize((256, 256))
            arr = np.clip(np.rint(np.asarray(im) * 255), 0, 255).astype(np.uint8)
            dest = out / t.genre / f"{Path(t.path).stem}.{name}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr, mode="L").save(dest)
            n += 1
    return len(tracks)


def genrekit_mode(data: Path, out: Path, workers: int) -> int:
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    s = run_augment(data, out, AugmentSettings(kinds=("mel",)), workers=workers, progress=False)
    return s.ok


def child(mode: str, data: Path, out: Path) -> None:
    t0 = time.perf_counter()
    n = naive(data, out) if mode == "naive" else genrekit_mode(data, out, int(mode[-1]))
    print(json.dumps({"mode": mode, "clips": n, "seconds": time.perf_counter() - t0}))


def _tree_pss_kb(root: int) -> int:
    """Proportional set size (kB) of ``root`` and its descendants, from /proc (0 elsewhere)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            pass
    return total


def measure(mode: str, data: Path) -> dict:
    import threading

    out = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    try:
        proc = subprocess.Popen([sys.executable, str(HERE), "--child", mode, "--data", str(data), "--out", str(out)],
                                stdout=subprocess.PIPE, text=True, cwd=HERE.parents[1])
        peak, done = [0], threading.Event()

        def sample():
            while not done.wait(0.25):
                peak[0] = max(peak[0], _tree_pss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout = proc.stdout.read()
        done.set()
        sampler.join()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{mode} failed with exit code {proc.returncode}")
        res = json.loads(stdout.strip().splitlines()[-1])
        res["peak_rss_mb"] = ru.ru_maxrss / 1024  # the largest of the child and the workers it reaped
        res["cpu_s"] = ru.ru_utime + ru.ru_stime  # the child and the workers it reaped, together
        res["peak_pss_mb"] = peak[0] / 1024  # all of them together
        return res
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-genre", type=int, default=None, help="use only the first N clips per genre")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.data, a.out)
        return
    if not a.data.is_dir():
        raise SystemExit(f"no data at {a.data}")
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(a.data, a.per_genre, Path(tmp) / "data")
        results = {m: measure(m, data) for m in ("naive", "genrekit1", "genrekit2")}
    print(f"{'mode':10s} {'clips':>6s} {'seconds':>8s} {'clips/s':>8s} {'CPU s':>8s} {'peak RSS MB':>14s} "
          f"{'peak PSS MB':>14s}")
    print(f"{'':10s} {'':6s} {'':8s} {'':8s} {'':8s} {'(one process)':>14s} {'(all, summed)':>14s}")
    for m, r in results.items():
        r["cps"] = r["clips"] / r["seconds"]
        print(f"{m:10s} {r['clips']:6d} {r['seconds']:8.1f} {r['cps']:8.2f} {r['cpu_s']:8.1f} {r['peak_rss_mb']:14.0f} {r['peak_pss_mb']:14.0f}")
    print(f"ratio genrekit --workers 2 / naive: {results['genrekit2']['cps'] / results['naive']['cps']:.2f} "
          "(target >= 3)")
    print(f"ratio genrekit --workers 1 / naive: {results['genrekit1']['cps'] / results['naive']['cps']:.2f} "
          "(target >= 1.5)")
    print(f"CPU seconds naive / genrekit --workers 1: {results['naive']['cpu_s'] / results['genrekit1']['cpu_s']:.2f} "
          "(the work saved, whatever else runs on the machine)")


if __name__ == "__main__":
    main()
