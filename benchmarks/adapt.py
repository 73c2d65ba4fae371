"""`genrekit adapt` and `genrekit suggest` on real music from outside GTZAN (ood_dev only).

The default recipe (`genrekit augment --features musicnn --augment none`, `genrekit train`, no
--arch) is trained on gtzan_mini, then taught k labelled ood_dev tracks per genre and scored on
the rest of ood_dev's classical/pop/rock (top-1 / top-2, mean ± s.d. over draws):

- k = 0 is the run itself (genrekit predict's probabilities);
- k = 1, 2, 5, 10 random tracks per genre, each draw its own seed;
- `suggest` vs random at k = 2: each draw splits the 150 known-genre tracks into a pool (half,
  stratified) and a test half; `suggest`'s ranking picks 6 tracks of the pool (what a user
  labels when told "label these"), random picks 6 of the pool (and, a stronger reference that
  needs the labels in advance, 2 per genre), all scored on the same test half;
- electronic as a new genre: k = 5 of each known genre plus 5 electronic tracks, the rest of
  electronic scored (its recall) beside the known genres' top-1 with and without electronic on
  the same draw.

The adapted heads are fitted by `genrekit.adapt.fit_adapted_head` (adapt's own fit) on pooled
embeddings computed once by predict's own path (`genrekit.predict.analyse_file`); once per run
the script also runs the real `genrekit adapt` (k = 5, audio through the backbone) and checks
that `genrekit predict` with the adapted run gives the cached head's probabilities, and prints
the CPU seconds of that adapt.

    python benchmarks/adapt.py [--run RUN] [--workdir DIR] [--draws 10]
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from _common import KNOWN, NEW, ood_bench_args, ood_embeddings


def scores(proba: np.ndarray, labels: list[str], genres) -> tuple[float, float]:
    y = np.array([labels.index(g) for g in genres])
    top2 = np.argsort(-proba, axis=1)[:, :2]
    return float((top2[:, 0] == y).mean()), float((top2 == y[:, None]).any(axis=1).mean())


def adapted_scores(known, emb, labels, pick, test, seed=0):
    from genrekit.adapt import fit_adapted_head
    from genrekit.trackhead import head_probabilities

    head = fit_adapted_head(known, emb["x"][pick], list(emb["genre"][pick]), labels,
                            [f"user:{i}" for i in pick], seed=seed, out_of_fold_too=False)
    proba = head_probabilities(head.kernel, head.bias, emb["x"][test])
    return head, proba


def per_genre(rng, emb, k, genres=KNOWN, among=None):
    idx = []
    for g in genres:
        cand = np.flatnonzero((emb["genre"] == g) & (True if among is None else among))
        idx += list(rng.choice(cand, size=k, replace=False))
    return np.array(idx, dtype=int)


def msd(v) -> str:
    v = np.asarray(v) * 100
    return f"{v.mean():5.1f} ± {v.std():3.1f}"


def check_real_adapt(run, emb, labels, known, work: Path) -> None:
    """The real `genrekit adapt` on 5 tracks per genre (symlinked into a folder per genre), and
    `genrekit predict` with the adapted run against the cached head on three other tracks."""
    from genrekit.adapt import adapt
    from genrekit.predict import predict_file
    from genrekit.runs import Run

    rng = np.random.default_rng(12345)
    pick = per_genre(rng, emb, 5)
    lab = work / "labelled"
    for i in pick:
        d = lab / emb["genre"][i]
        d.mkdir(parents=True, exist_ok=True)
        if not (d / Path(emb["path"][i]).name).exists():
            os.symlink(emb["path"][i], d / Path(emb["path"][i]).name)
    out = work / f"adapted-{int(time.time())}"
    c0, w0 = time.process_time(), time.perf_counter()
    res = adapt(run.path, out, data=lab)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rest = [i for i in range(len(emb["genre"])) if i not in set(pick) and emb["genre"][i] in KNOWN][:3]
    _, cached = adapted_scores(known, emb, labels, pick, np.array(rest))
    got = np.stack([predict_file(emb["path"][i], Run(out)) for i in rest])
    diff = float(np.abs(got - cached).max())
    print(f"real `genrekit adapt` with 15 labelled tracks: {cpu:.1f} CPU s, {wall:.1f} s wall "
          f"(embedding the 15 tracks included); predict with the adapted run vs the cached head: "
          f"max |diff| {diff:.1e} over {len(rest)} tracks{'' if diff < 1e-4 else '  <-- MISMATCH'}; "
          f"T = {res.temperature:.3g}")


def main() -> None:
    a, work, run = ood_bench_args(__doc__)
    from genrekit.adapt import rank_suggestions
    from genrekit.evaluation.calibration import apply_temperature
    from genrekit.trackrun import load_embeddings

    labels, known = list(run.labels), load_embeddings(run)
    t0 = time.perf_counter()
    emb = ood_embeddings(run, work)
    print(f"run {run.path}: {len(known['x'])} tracks kept; ood_dev embedded in {time.perf_counter() - t0:.0f} s "
          f"({len(emb['genre'])} tracks)")
    is_known = np.isin(emb["genre"], KNOWN)
    print(f"\nadapted with k labelled ood_dev tracks per genre, the rest of classical/pop/rock scored "
          f"({a.draws} draws, mean ± s.d., %)")
    print("| k per genre | top-1 | top-2 |\n| --- | --- | --- |")
    t1, t2 = scores(emb["p"][is_known], labels, emb["genre"][is_known])
    print(f"| 0 (the run) | {t1 * 100:5.1f} | {t2 * 100:5.1f} |")
    for k in (1, 2, 5, 10):
        r1, r2 = [], []
        for d in range(a.draws):
            pick = per_genre(np.random.default_rng(1000 * k + d), emb, k)
            test = np.flatnonzero(is_known & ~np.isin(np.arange(len(is_known)), pick))
            _, proba = adapted_scores(known, emb, labels, pick, test)
            s1, s2 = scores(proba, labels, emb["genre"][test])
            r1.append(s1)
            r2.append(s2)
        print(f"| {k} random | {msd(r1)} | {msd(r2)} |")

    # suggest vs random: a pool and a test half per draw
    res = {"suggest": [], "random (6 of the pool)": [], "random (2 per genre, labels known)": []}
    scale = known["x"].std(axis=0) + 1e-6
    draws = max(a.draws, 10)
    for d in range(draws):
        rng = np.random.default_rng(50_000 + d)
        pool = np.zeros(len(is_known), dtype=bool)
        for g in KNOWN:
            cand = np.flatnonzero(emb["genre"] == g)
            pool[rng.choice(cand, size=len(cand) // 2, replace=False)] = True
        test = np.flatnonzero(is_known & ~pool)
        pidx = np.flatnonzero(pool)
        cal = apply_temperature(emb["p"][pidx], run.temperature)
        picks = {"suggest": pidx[rank_suggestions(cal, emb["x"][pidx].astype(np.float64), scale, 6)],
                 "random (6 of the pool)": rng.choice(pidx, size=6, replace=False),
                 "random (2 per genre, labels known)": per_genre(rng, emb, 2, among=pool)}
        for name, pick in picks.items():
            _, proba = adapted_scores(known, emb, labels, np.asarray(pick), test)
            res[name].append(scores(proba, labels, emb["genre"][test]))
    print(f"\nwhich 6 tracks to label ({draws} draws: half of each genre is the pool, the other half scored; %)")
    print("| picks | top-1 | top-2 |\n| --- | --- | --- |")
    for name, v in res.items():
        v = np.array(v)
        print(f"| {name} | {msd(v[:, 0])} | {msd(v[:, 1])} |")
    gain = np.array(res["suggest"])[:, 0] - np.array(res["random (6 of the pool)"])[:, 0]
    print(f"suggest − random (6 of the pool), top-1, paired: {gain.mean() * 100:+.1f} ± {gain.std() * 100:.1f} points")

    # electronic as a new genre
    rec, base, withe = [], [], []
    for d in range(a.draws):
        rng = np.random.default_rng(70_000 + d)
        pick = per_genre(rng, emb, 5)
        pick_e = np.concatenate([pick, per_genre(rng, emb, 5, genres=(NEW,))])
        rest = ~np.isin(np.arange(len(is_known)), pick_e)
        test_k, test_e = np.flatnonzero(is_known & rest), np.flatnonzero((emb["genre"] == NEW) & rest)
        _, p0 = adapted_scores(known, emb, labels, pick, test_k)
        head, p1 = adapted_scores(known, emb, labels, pick_e, np.concatenate([test_k, test_e]))
        base.append(scores(p0, labels, emb["genre"][test_k])[0])
        withe.append(scores(p1[:len(test_k)], head.labels, emb["genre"][test_k])[0])
        rec.append(float((p1[len(test_k):].argmax(axis=1) == head.labels.index(NEW)).mean()))
    drop = np.array(base) - np.array(withe)
    print(f"\nelectronic as a new genre ({a.draws} draws, 5 labelled tracks of each genre, electronic included):")
    print(f"  other electronic tracks called electronic: {msd(rec)} %")
    print(f"  classical/pop/rock top-1 without / with electronic: {msd(base)} / {msd(withe)} % "
          f"(drop {drop.mean() * 100:+.1f} ± {drop.std() * 100:.1f} points)")
    print()
    check_real_adapt(run, emb, labels, known, work)


if __name__ == "__main__":
    main()
