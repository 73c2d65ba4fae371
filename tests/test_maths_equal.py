"""The maths moved onto librosa, SciPy and scikit-learn give the figures of genrekit's former
hand-written versions, which are copied here as the reference (``_old_*``): MFCCs, the NLL, the
fitted temperature, the embedding-distance scores and thresholds, the inner validation counts."""
import math
from collections import Counter

import numpy as np
import pytest

from genrekit.data_tools.features import FeatureConfig, db_to_mfcc
from genrekit.data_tools.folds import inner_validation
from genrekit.evaluation.calibration import (
    T_RANGE,
    apply_temperature,
    choose_distance_threshold,
    fit_knn_distance,
    fit_temperature,
    knn_distance,
    nll,
)

# -- the former implementations (reference only) -----------------------------------------------


def _old_db_to_mfcc(db, n_mfcc):
    import scipy.fft

    return np.ascontiguousarray(scipy.fft.dct(db, axis=0, type=2, norm="ortho")[:n_mfcc].T, dtype=np.float32)


def _old_nll(p, y):
    p, y = np.asarray(p, np.float64), np.asarray(y, int)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def _old_fit_temperature(p, y, t_range=T_RANGE):
    p, y = np.asarray(p, np.float64), np.asarray(y, int)
    lo, hi = math.log(t_range[0]), math.log(t_range[1])

    def f(log_t):
        return _old_nll(apply_temperature(p, math.exp(log_t)), y)

    grid = np.linspace(lo, hi, 61)
    vals = [f(g) for g in grid]
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    best = (a + b) / 2
    if vals[i] < f(best):
        best = grid[i]
    return float(math.exp(best))


def _old_fit_knn_distance(x, k, dims):
    x = np.asarray(x, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.maximum(scale, max(1e-6 * float(np.median(scale)), 1e-12))
    z = (x - mean) / scale
    d = int(min(dims, len(x) - 1, x.shape[1]))
    comp = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)[2][:d]
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32), "components": comp.astype(np.float32),
            "train": (z @ comp.T).astype(np.float32), "k": np.array(min(k, len(x)), dtype=np.int64)}


def _old_knn_distance(stats, x):
    x = np.atleast_2d(np.asarray(x, np.float64))
    f = {k: np.asarray(v, np.float64) for k, v in stats.items()}
    z = ((x - f["mean"]) / f["scale"]) @ f["components"].T
    t = f["train"]
    d2 = (z * z).sum(1)[:, None] - 2 * z @ t.T + (t * t).sum(1)[None]
    return np.sort(np.maximum(d2, 0.0), axis=1)[:, : int(stats["k"])].mean(axis=1)


def _old_inner_counts(train_tracks, track_genres, fraction):
    c = Counter(track_genres[t] for t in train_tracks)
    return {g: min(max(1, int(round(fraction * n))), n - 1) for g, n in c.items() if min(max(1, int(round(fraction * n))), n - 1)}


# -- fixed sets ----------------------------------------------------------------------------------


def _proba(n, k, sharpness, seed, one_hot=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.2
    z *= sharpness
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    if one_hot:
        p = np.eye(k)[p.argmax(1)]
    return p, y


PROBA_SETS = [(3000, 6, 4.0, 0, False), (500, 10, 0.3, 1, False), (200, 2, 1.0, 2, False),
              (64, 10, 8.0, 3, False), (50, 4, 1.0, 4, True)]


def test_mfcc_is_librosa_and_unchanged():
    import librosa

    rng = np.random.default_rng(0)
    cfg = FeatureConfig()
    for frames in (1, 7, 130):
        db = (rng.normal(size=(cfg.n_mels, frames)) * 20 - 40).astype(np.float32)
        got = db_to_mfcc(db, cfg)
        assert got.dtype == np.float32 and got.shape == (frames, cfg.of("mfcc").n_mfcc)
        np.testing.assert_allclose(got, _old_db_to_mfcc(db, cfg.of("mfcc").n_mfcc), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(got, librosa.feature.mfcc(S=db, n_mfcc=cfg.of("mfcc").n_mfcc).T, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("spec", PROBA_SETS)
def test_nll_and_temperature_unchanged(spec):
    p, y = _proba(*spec)
    for q in (p, p.astype(np.float32), apply_temperature(p, 0.05)):
        assert nll(q, y) == pytest.approx(_old_nll(q, y), rel=1e-6, abs=1e-9)
    t_old, t_new = _old_fit_temperature(p, y), fit_temperature(p, y)
    if spec[-1]:  # one-hot: the NLL is flat in T; the old search kept ~1.1 x the lowest T, now the lowest
        assert t_new == pytest.approx(T_RANGE[0]) and t_old == pytest.approx(T_RANGE[0] * 400 ** (1 / 60))
        np.testing.assert_array_equal(apply_temperature(p, t_new), apply_temperature(p, t_old))
    else:
        assert t_new == pytest.approx(t_old, rel=1e-6)
    assert nll(apply_temperature(p, t_new), y) == pytest.approx(nll(apply_temperature(p, t_old), y), rel=1e-9)


def test_temperature_at_the_edge_of_its_range_unchanged():
    p, y = _proba(300, 5, 40.0, 5)  # far too sure: the best T lies at the top of a small range
    assert fit_temperature(p, y, (0.5, 2.0)) == pytest.approx(_old_fit_temperature(p, y, (0.5, 2.0)), rel=1e-6)
    p, y = _proba(300, 5, 0.02, 6)  # nearly uniform: at the bottom
    assert fit_temperature(p, y, (0.5, 2.0)) == pytest.approx(_old_fit_temperature(p, y, (0.5, 2.0)), rel=1e-6)


@pytest.mark.parametrize("n, f, dims, k", [(40, 12, 6, 5), (200, 64, 30, 5), (8, 20, 30, 5), (3, 5, 30, 10)])
def test_knn_distance_scores_and_threshold_unchanged(n, f, dims, k):
    rng = np.random.default_rng(n)
    train = rng.normal(size=(n, f)) * rng.uniform(0.1, 10, f) + 5
    train[:, 0] = 3.0  # a constant feature: its scale is floored, not set to 1
    query = np.vstack([train[: min(3, n)] + 0.01, train[:1], rng.normal(size=(20, f)) * 30])
    new, old = fit_knn_distance(train, k=k, dims=dims), _old_fit_knn_distance(train, k, dims)
    assert sorted(new) == sorted(old) and all(isinstance(v, np.ndarray) for v in new.values())
    for key in ("mean", "scale", "k"):
        np.testing.assert_allclose(new[key], old[key], rtol=1e-6)
    assert new["components"].shape == old["components"].shape and new["train"].shape == old["train"].shape
    got, ref = knn_distance(new, query), _old_knn_distance(old, query)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert knn_distance(new, query[0]) == pytest.approx(got[0])
    valid = rng.normal(size=(30, f)) * rng.uniform(0.1, 10, f) + 5
    d_new, d_old = knn_distance(new, valid), _old_knn_distance(old, valid)
    for accept in (0.5, 0.9, 0.95, 1.0):
        assert choose_distance_threshold(d_new, accept) == pytest.approx(choose_distance_threshold(d_old, accept),
                                                                         rel=1e-5)


@pytest.mark.parametrize("sizes, fraction", [({f"g{i}": 72 for i in range(10)}, 0.25),
                                             ({f"g{i}": 45 for i in range(10)}, 1 / 9),
                                             ({"a": 2, "b": 2, "c": 2}, 0.25),
                                             ({"a": 40, "b": 40, "c": 1}, 0.25),
                                             ({"a": 13, "b": 7, "c": 30, "d": 3}, 0.25)])
def test_inner_validation_counts_unchanged(sizes, fraction):
    genres = {f"{g}-{i:03d}": g for g, n in sizes.items() for i in range(n)}
    tracks = sorted(genres)
    got = inner_validation(tracks, genres, fraction, seed=3)
    assert got <= set(tracks)
    assert dict(Counter(genres[t] for t in got)) == _old_inner_counts(tracks, genres, fraction)
    assert inner_validation(tracks, genres, fraction, seed=3) == got  # seeded
    assert len(tracks) < 20 or inner_validation(tracks, genres, fraction, seed=4) != got
    left = Counter(genres[t] for t in set(tracks) - got)
    assert set(left) == set(sizes)  # every genre keeps a track to train on


def test_inner_validation_on_unbalanced_genres_is_within_one_track_of_the_old_counts():
    """StratifiedShuffleSplit shares the same total out by largest remainders over all genres,
    so on unbalanced genres a genre can get one track more or less than the old per-genre rounding
    (a small genre sometimes none); every genre still keeps a track to train on."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        sizes = {f"g{i}": int(rng.integers(2, 80)) for i in range(int(rng.integers(2, 12)))}
        fraction = float(rng.choice([0.25, 1 / 9, 1 / 3]))
        genres = {f"{g}-{i:03d}": g for g, n in sizes.items() for i in range(n)}
        got = inner_validation(sorted(genres), genres, fraction, seed=trial)
        have, old = Counter(genres[t] for t in got), _old_inner_counts(sorted(genres), genres, fraction)
        assert sum(have.values()) == sum(old.values())
        assert all(abs(have[g] - old.get(g, 0)) <= 1 and have[g] < n for g, n in sizes.items())
