"""Transfer phase with cached base outputs vs a plain ``model.fit`` with a frozen base.

Both train the same MobileNet head on the same gtzan_mini mel PNGs (train split with time
stretch and pitch variants) in one process. Prints seconds per epoch: the plain fit's
epochs (each runs the frozen base over every image), and genrekit's cached path both as
head-only epochs and amortised with the one-off base pass over the run's epochs.
Target: >= 10x faster per epoch for MobileNet over the study's 12 epochs.

    python benchmarks/bench_transfer.py [--epochs 12] [--plain-epochs 3] [--genres blues,metal]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from _common import WEIGHTS, epoch_timer, gtzan_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, default=None, help="feature folder (default: render gtzan_mini)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the cached run (default 12, the study's)")
    ap.add_argument("--plain-epochs", type=int, default=3, help="epochs of the plain fit to time (default 3)")
    ap.add_argument("--genres", default=None, help="only these gtzan_mini genres (comma-separated): a shorter run")
    a = ap.parse_args()
    from genrekit.train import TrainOptions, train

    weights = str(WEIGHTS) if WEIGHTS.is_file() else "none"
    with tempfile.TemporaryDirectory() as tmp:
        feats = a.features or gtzan_features(Path(tmp) / "feats", genres=a.genres.split(",") if a.genres else None)
        results = {}
        load = [os.getloadavg()[0]]
        for name, cache in (("plain", False), ("cached", True)):
            timer = epoch_timer()
            epochs = a.epochs if cache else a.plain_epochs
            r = train(TrainOptions(data=str(feats), arch="mobilenet", phase="transfer", weights=weights,
                                   epochs=epochs, patience=epochs, cache_base=cache, verbose=0,
                                   out=str(Path(tmp) / name), extra_callbacks=[timer]))
            cfg = json.loads((Path(r.run) / "config.json").read_text())
            results[name] = {"epochs": timer.times, "base_s": cfg["base_feature_seconds"],
                             "total_s": cfg["train_seconds"], "n": cfg["data"]["train_rows"]}
            load.append(os.getloadavg()[0])
    plain = statistics.median(results["plain"]["epochs"][1:] or results["plain"]["epochs"])
    head = statistics.median(results["cached"]["epochs"][1:])
    n_ep = len(results["cached"]["epochs"])
    # the whole cached run: base pass, every head epoch (the first compiles), the final checkpoint
    amortised = results["cached"]["total_s"] / n_ep
    print(f"MobileNet transfer phase, {results['plain']['n']} training images 256x256, weights: {Path(weights).name}")
    print(f"1-min load average before / after plain / after cached: {' / '.join(f'{v:.2f}' for v in load)} "
          f"({os.cpu_count()} cores)")
    print(f"plain model.fit, frozen base      : {plain:7.2f} s/epoch (median of {len(results['plain']['epochs'])} epochs, first dropped)")
    print(f"cached base, head-only epochs     : {head:7.2f} s/epoch (median; the first, with tracing: "
          f"{results['cached']['epochs'][0]:.2f} s)")
    print(f"cached base, one-off base pass    : {results['cached']['base_s']:7.2f} s")
    print(f"cached, whole run / {n_ep:2d} epochs     : {amortised:7.2f} s/epoch (base pass, head epochs, checkpoint)")
    # a whole plain run: its first epoch (tracing included) and the others at the median rate
    plain_run = results["plain"]["epochs"][0] + (n_ep - 1) * plain
    print(f"plain, whole {n_ep:2d}-epoch run (est.)   : {plain_run:7.2f} s (first epoch + {n_ep - 1} x median)")
    print(f"cached, whole {n_ep:2d}-epoch run         : {results['cached']['total_s']:7.2f} s")
    print(f"speed-up per {n_ep}-epoch run          : {plain_run / results['cached']['total_s']:6.1f}x   (target >= 10x)")
    print(f"ceiling if the head cost nothing  : {plain_run / results['cached']['base_s']:6.1f}x   "
          f"(plain run / the one base pass, {results['cached']['base_s'] / plain:.2f} plain epochs)")
    print(f"speed-up per epoch (amortised)    : {plain / amortised:6.1f}x   (steady plain epochs only)")
    print(f"speed-up per epoch (head only)    : {plain / head:6.1f}x")


if __name__ == "__main__":
    main()
