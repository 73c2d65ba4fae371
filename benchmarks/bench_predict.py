"""Wall time of ``genrekit predict`` on one 30 s track (decode + features + model), CPU.

For ``cnn`` and ``mobilenet`` run folders (trained for one epoch on gtzan_mini: the time
does not depend on the weights' values), prints the median over repeated predictions of a
fresh, already-loaded run, and the one-off model-load time.

    python benchmarks/bench_predict.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import GTZAN_MINI, WEIGHTS, gtzan_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    from genrekit.predict import predict_file
    from genrekit.runs import Run
    from genrekit.train import TrainOptions, train

    track = GTZAN_MINI / "jazz" / "jazz.00004.wav"
    with tempfile.TemporaryDirectory() as tmp:
        feats = gtzan_features(Path(tmp) / "feats", augment=())
        print(f"track: {track.name} (30 s); median of {a.repeats} predictions")
        for arch, extra in (("cnn", {}), ("mobilenet", {"phase": "transfer",
                                                         "weights": str(WEIGHTS) if WEIGHTS.is_file() else "none"})):
            r = train(TrainOptions(data=str(feats), arch=arch, epochs=1, verbose=0, out=str(Path(tmp) / arch), **extra))
            run = Run(r["run"])
            t0 = time.perf_counter()
            run.model()
            load_s = time.perf_counter() - t0
            predict_file(track, run)  # warm-up (graph tracing)
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                predict_file(track, run)
                times.append(time.perf_counter() - t0)
            print(f"{arch:10s} predict {statistics.median(times) * 1000:7.0f} ms   (model load {load_s:.2f} s, once per run)")


if __name__ == "__main__":
    main()
