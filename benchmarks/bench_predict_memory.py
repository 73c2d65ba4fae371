"""Peak memory of ``genrekit predict`` on a synthetic 1-minute and 20-minute track.

Each length is predicted in its own fresh Python process (the run loaded, the file analysed
with ``--reject``, a ``--timeline`` written), and that process's peak resident memory
(``ru_maxrss``) is printed with the ratio 20 min / 1 min. A track longer than
``STREAM_ABOVE_SECONDS`` (10 min) is read block by block, so the 20-minute track should need
about as much memory as the 1-minute one (bounded memory, whatever the length).

Without ``--model`` a tiny default-recipe run (musicnn_lr) is trained on synthetic tones with
a random backbone (no download; its memory is that of the real model). Not a test: numbers
depend on the machine.

    python benchmarks/bench_predict_memory.py [--model RUN] [--hop SECONDS] [--minutes 1 20]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT

CHILD = r"""
import json, resource, sys, tempfile
from genrekit.predict import predict_files
model, path, hop, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
[r] = predict_files([path], model, reject=True, hop_s=float(hop) if hop != "none" else None, timeline_dir=out)
assert "error" not in r, r
rows = sum(1 for _ in open(r["timeline"][0])) - 1
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": rows,
                  "genre": r.get("genre"), "top": r["top"][0]}))
"""


def synthetic_track(path: Path, minutes: float, sr: int = 16000) -> Path:
    """A track of gliding tones and noise, written a minute at a time (the writer's memory stays small)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as fh:
        phase = 0.0
        for m in range(int(np.ceil(minutes))):
            n = int(sr * 60 * min(1.0, minutes - m))
            t = np.arange(n) / sr
            f = 300 + 250 * np.sin(2 * np.pi * (t + 60 * m) / 17.0)
            ph = phase + 2 * np.pi * np.cumsum(f) / sr
            phase = float(ph[-1])
            fh.write((0.3 * np.sin(ph) + 0.02 * rng.standard_normal(n)).astype(np.float32))
    return path


def tiny_run(work: Path) -> Path:
    """A musicnn_lr run on synthetic tones (random backbone weights: offline)."""
    import soundfile as sf

    from genrekit.cli import main
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    sr = 16000
    for gi, (g, f0) in enumerate((("low", 220.0), ("mid", 660.0), ("high", 1760.0))):
        (work / "d" / g).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            t = np.arange(int(4 * sr)) / sr
            y = 0.5 * np.sin(2 * np.pi * f0 * (1 + 0.02 * i) * t) + 0.05 * np.random.default_rng(gi * 100 + i) \
                .standard_normal(len(t))
            sf.write(work / "d" / g / f"{g}.{i:05d}.wav", y.astype(np.float32), sr, subtype="PCM_16")
    run_augment(work / "d", work / "f", AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES), kinds=("musicnn",),
                                                        augment=AugmentConfig(augmentations=()), ratios=(40, 40, 20)),
                progress=False)
    if main(["train", "--data", str(work / "f"), "--weights", "none", "--out", str(work / "run"), "--quiet"]) != 0:
        raise SystemExit("training the tiny run failed")
    return work / "run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a run folder (default: a tiny musicnn_lr run made here)")
    ap.add_argument("--hop", default="none", help="--hop SECONDS for predict (default: the run's own)")
    ap.add_argument("--minutes", type=float, nargs=2, default=(1.0, 20.0))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="genrekit-predict-memory-") as tmp:
        work = Path(tmp)
        model = Path(a.model) if a.model else tiny_run(work)
        peaks = []
        for minutes in a.minutes:
            track = synthetic_track(work / f"track-{minutes:g}min.wav", minutes)
            out = subprocess.run([sys.executable, "-c", CHILD, str(model), str(track), a.hop, str(work / "tl")],
                                 capture_output=True, text=True, cwd=str(ROOT))
            if out.returncode != 0:
                raise SystemExit(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "predict failed")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            peaks.append(res["peak_mib"])
            print(f"{minutes:5g} min track: peak memory {res['peak_mib']:7.0f} MiB   ({res['rows']} timeline rows; "
                  f"answer {res['genre']}, top {res['top']['genre']} {res['top']['probability']:.3f})")
        print(f"ratio {a.minutes[1]:g} min / {a.minutes[0]:g} min: {peaks[1] / peaks[0]:.2f}")


if __name__ == "__main__":
    main()
