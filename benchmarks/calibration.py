"""Is the default recipe's calibration honest on music from outside GTZAN?

The default recipe (`genrekit augment --features musicnn --augment none`, `genrekit train`) is
trained on gtzan_mini; its temperature comes from out-of-fold predictions over every training
and validation track and is never sharper than the raw model on the training collection's own
tracks (`genrekit.evaluation.calibration.choose_temperature`). Printed, expected calibration
error (15 equal-width bins, top label) and NLL:

- in-domain: the run's out-of-fold held-out tracks (calibration.json), raw and scaled;
- ood_dev classical/pop/rock (150 tracks): raw, scaled with the run's T, and scaled with the
  T a plain out-of-fold fit gives (what the run would use if it trusted in-domain folds);
- after `genrekit adapt` with k = 5 labelled ood_dev tracks per genre (10 draws): the T fitted
  on the user's held-out tracks, ECE of the rest of ood_dev raw vs scaled (mean ± s.d.).

The scaled ECE must not be worse than the raw one on ood_dev.

    python benchmarks/calibration.py [--run RUN] [--workdir DIR] [--draws 10]
"""
from __future__ import annotations

import json
import tempfile

import numpy as np
from _common import KNOWN, ood_bench_args, ood_embeddings


def main() -> None:
    a, work, run = ood_bench_args(__doc__)
    from genrekit.adapt import fit_adapted_head
    from genrekit.evaluation.calibration import (
        apply_temperature,
        expected_calibration_error,
        fit_temperature,
        nll,
    )
    from genrekit.trackhead import adapt_folds, head_probabilities, out_of_fold
    from genrekit.trackrun import calibrate_from_folds, load_embeddings

    labels, known = list(run.labels), load_embeddings(run)
    cal = json.loads((run.path / "calibration.json").read_text())
    emb = ood_embeddings(run, work)
    k_mask = np.isin(emb["genre"], KNOWN)
    y = np.array([labels.index(g) for g in emb["genre"][k_mask]])
    p = apply_temperature(emb["p"][k_mask], 1.0)  # raw, renormalised (float32 sums drift by 1e-7)

    y_known = np.array([labels.index(g) for g in known["genre"]])
    C = float(run.config["head_fit"]["C"])
    oof, held = out_of_fold(known["x"].astype(np.float64), y_known, len(labels), C,
                            adapt_folds(y_known, known["track_id"], 0), None, 0)
    t_plain = fit_temperature(oof[held], y_known[held])

    def row(name, proba, yy):
        return f"| {name} | {expected_calibration_error(proba, yy):.3f} | {nll(proba, yy):.3f} |"

    print(f"run {run.path}: T = {cal['temperature']:.3g} ({cal.get('note') or cal.get('temperature_from')})")
    print("\n| set, probabilities | ECE | NLL |\n| --- | --- | --- |")
    print(f"| in-domain, {cal['heldout_tracks']} out-of-fold tracks, raw | {cal['heldout_ece_before']:.3f} | "
          f"{cal['heldout_nll_before']:.3f} |")
    print(f"| in-domain, scaled (T = {cal['temperature']:.3g}) | {cal['heldout_ece_after']:.3f} | "
          f"{cal['heldout_nll_after']:.3f} |")
    print(row("ood_dev classical/pop/rock, raw", p, y))
    scaled = apply_temperature(p, cal["temperature"])
    print(row(f"ood_dev, scaled with the run's T = {cal['temperature']:.3g}", scaled, y))
    print(row(f"ood_dev, scaled with a plain out-of-fold fit, T = {t_plain:.3g} (not used)",
              apply_temperature(p, t_plain), y))
    ok = expected_calibration_error(scaled, y) <= expected_calibration_error(p, y) + 1e-12
    print(f"scaled ECE <= raw ECE on ood_dev: {'yes' if ok else 'NO'}")

    ts, raw_e, sc_e = [], [], []
    for d in range(a.draws):
        rng = np.random.default_rng(90_000 + d)
        pick = np.concatenate([rng.choice(np.flatnonzero(emb["genre"] == g), size=5, replace=False) for g in KNOWN])
        head = fit_adapted_head(known, emb["x"][pick], list(emb["genre"][pick]), labels,
                                [f"user:{i}" for i in pick], out_of_fold_too=False)
        with tempfile.TemporaryDirectory() as tmp:
            c = calibrate_from_folds(tmp, head.x, head.y, adapt_folds(head.y, head.track_ids, 0), len(head.labels),
                                     0.003, head.sample_weight, head.is_user, 0, log=lambda m: None)
        rest = np.flatnonzero(k_mask & ~np.isin(np.arange(len(k_mask)), pick))
        pr = head_probabilities(head.kernel, head.bias, emb["x"][rest])
        yr = np.array([head.labels.index(g) for g in emb["genre"][rest]])
        ts.append(c["temperature"])
        raw_e.append(expected_calibration_error(pr, yr))
        sc_e.append(expected_calibration_error(apply_temperature(pr, c["temperature"]), yr))
    ts, raw_e, sc_e = map(np.array, (ts, raw_e, sc_e))
    print(f"\nadapted with 5 labelled ood_dev tracks per genre ({a.draws} draws), the rest of ood_dev:")
    print(f"  T from the user's held-out tracks {ts.mean():.3g} ± {ts.std():.2g}; ECE raw {raw_e.mean():.3f} ± "
          f"{raw_e.std():.3f}, scaled {sc_e.mean():.3f} ± {sc_e.std():.3f} "
          f"(scaled <= raw in {(sc_e <= raw_e + 1e-12).sum()} of {a.draws} draws)")


if __name__ == "__main__":
    main()
