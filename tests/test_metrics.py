"""Metrics against small hand-computed cases."""
import numpy as np
import pytest

from genrekit.evaluation.errors import EvaluationError
from genrekit.evaluation.metrics import (
    aggregate_tracks,
    classification_figures,
    evaluate_predictions,
    top_k_accuracy,
)

LABELS = ["a", "b", "c"]


def test_top_k_ties_follow_scikit_learn():
    """The issue's case: probabilities [0.5, 0.25, 0.25], k=2, true class 2 -> 1.0 (scikit-learn
    ranks the higher index first among ties), true class 1 -> 0.0."""
    p = np.array([[0.5, 0.25, 0.25]])
    assert top_k_accuracy(np.array([2]), p, 2) == 1.0
    assert top_k_accuracy(np.array([1]), p, 2) == 0.0
    assert top_k_accuracy(np.array([0]), p, 1) == 1.0
    # per genre too: class c's only sample is a top-2 hit, class b's is not
    f = classification_figures(np.array([2, 1]), np.vstack([p, p]), LABELS)
    assert f["per_genre"]["c"]["top2"] == 1.0 and f["per_genre"]["b"]["top2"] == 0.0
    assert f["top2"] == 0.5


@pytest.mark.parametrize("n_cls", [2, 3, 5, 10])
def test_top_k_matches_scikit_learn_on_random_data(n_cls):
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(n_cls)
    for trial in range(20):
        n = int(rng.integers(1, 40))
        # coarse scores make ties common; some classes never occur in y
        raw = rng.integers(0, 4, size=(n, n_cls)).astype(float) + 1e-3 * (trial % 2) * rng.random((n, n_cls))
        raw[raw.sum(axis=1) == 0] = 1.0
        p = raw / raw.sum(axis=1, keepdims=True)
        y = rng.integers(0, max(1, n_cls - 1), size=n)
        for k in range(1, n_cls):
            score = p[:, 1] if n_cls == 2 else p  # scikit-learn's own form for two classes
            want = top_k_accuracy_score(y, score, k=k, labels=np.arange(n_cls))
            assert top_k_accuracy(y, p, k) == pytest.approx(want), (trial, k)
        f = classification_figures(y, p, [f"g{i}" for i in range(n_cls)])
        assert f["top1"] == pytest.approx(top_k_accuracy_score(y, p[:, 1] if n_cls == 2 else p, k=1,
                                                               labels=np.arange(n_cls)))
        assert f["top2"] == (1.0 if n_cls == 2 else pytest.approx(
            top_k_accuracy_score(y, p, k=2, labels=np.arange(n_cls))))


def test_loss_is_scikit_learns_log_loss():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), size=30)
    y = rng.integers(0, 3, size=30)  # class 3 never occurs
    f = classification_figures(y, p, list("abcd"))
    assert f["loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2, 3]), rel=1e-9)
    assert f["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(30), y])), rel=1e-9)


def test_a_zero_probability_for_the_true_class_costs_a_finite_loss():
    f = classification_figures(np.array([0, 1]), np.array([[0.0, 1.0], [0.0, 1.0]]), ["x", "y"])
    assert f["loss"] == pytest.approx(-np.log(1e-12) / 2, rel=1e-6)  # floored at 1e-12, as before


def test_non_finite_probabilities_are_refused():
    with pytest.raises(EvaluationError, match="non-finite"):
        classification_figures(np.array([0, 1]), np.array([[np.nan, 0.5], [0.5, 0.5]]), ["x", "y"])


def test_a_class_absent_from_predictions():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[.9, .1, 0], [.8, .2, 0], [.1, .9, 0], [.6, .4, 0], [.2, .8, 0], [.7, .3, 0]])
    f = classification_figures(y, p, LABELS)
    assert f["top1"] == pytest.approx(3 / 6)
    # per class: a P=2/4 R=1, b P=1/2 R=1/2, c never predicted: P undefined (None, shown "–") R=0
    assert f["per_genre"]["a"]["precision"] == pytest.approx(0.5)
    assert f["per_genre"]["b"]["recall"] == pytest.approx(0.5)
    assert f["per_genre"]["c"]["precision"] is None and f["per_genre"]["c"]["recall"] == 0
    assert f["precision_macro"] == pytest.approx((0.5 + 0.5 + 0) / 3)  # scikit-learn's macro: 0 for c
    f1_a, f1_b = 2 * 0.5 * 1 / 1.5, 0.5
    assert f["f1_macro"] == pytest.approx((f1_a + f1_b + 0) / 3)
    assert f["f1_micro"] == pytest.approx(0.5)  # = accuracy for single-label problems
    assert f["confusion"] == [[2, 0, 0], [1, 1, 0], [1, 1, 0]]
    assert f["confusion_normalised"][2] == [0.5, 0.5, 0.0]
    assert f["per_genre"]["c"]["top2"] == 0.0  # c always scored 0: never in the top 2


def test_auc_and_loss():
    y = np.array([0, 1])
    p = np.array([[0.8, 0.2], [0.3, 0.7]])
    f = classification_figures(y, p, ["x", "y"])
    assert f["auc_macro"] == pytest.approx(1.0)
    assert f["loss"] == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)


def test_one_track_aggregation():
    tracks = ["t1", "t1", "t1", "t2"]
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.4, 0.6], [0.4, 0.6], [0.9, 0.1], [0.2, 0.8]])
    ids, ty, tp = aggregate_tracks(tracks, y, p)
    assert list(ids) == ["t1", "t2"] and list(ty) == [0, 1]
    np.testing.assert_allclose(tp[0], [(0.4 + 0.4 + 0.9) / 3, (0.6 + 0.6 + 0.1) / 3])
    res = evaluate_predictions(tracks, y, p, ["x", "y"])
    assert res["clip"]["top1"] == pytest.approx(2 / 4)  # two of t1's segments are wrong
    assert res["track"]["top1"] == pytest.approx(1.0)  # the mean saves t1
    assert res["track"]["n"] == 2


def test_bad_inputs():
    with pytest.raises(EvaluationError):
        classification_figures(np.array([], dtype=int), np.zeros((0, 3)), LABELS)
    with pytest.raises(EvaluationError, match="classes"):
        classification_figures(np.array([0]), np.array([[1.0, 0.0]]), LABELS)
    with pytest.raises(EvaluationError, match="different labels"):
        aggregate_tracks(["t", "t"], np.array([0, 1]), np.array([[1.0, 0], [0, 1.0]]))


def test_every_reported_figure_is_computed_and_reported_once():
    """The one list of figures (evaluation.figures) names what metrics computes, and report.md
    and the compare table take their rows and columns from it."""
    from genrekit.evaluation.figures import COMPARE_FIGURES, FIGURES, PER_GENRE, figure
    from genrekit.evaluation.report import COMPARE_FIELDS, compare_table, evaluation_report

    y = np.array([0, 1, 2, 2])
    p = np.array([[.6, .3, .1], [.2, .5, .3], [.1, .2, .7], [.5, .1, .4]])
    res = evaluate_predictions(["t1", "t2", "t3", "t4"], y, p, LABELS)
    added_by_evaluate = {"top1_per_genre_mean"}
    for lv in ("clip", "track"):
        missing = [f.key for f in FIGURES if f.key not in res[lv] and f.key not in added_by_evaluate]
        assert not missing, f"listed but not computed: {missing}"
        assert all(f.key in res[lv]["per_genre"]["a"] for f in PER_GENRE)
    md = evaluation_report(res, "t", [], {})
    summary = md.split("## Summary")[1].split("## Per genre")[0]
    for f in FIGURES:
        if f.key not in added_by_evaluate:
            assert f"| {f.label} | {f.format(res['clip'][f.key])} | {f.format(res['track'][f.key])} |" in summary
    assert "balanced" not in summary  # only when evaluate added it
    assert "| genre | n | top-1 | top-2 | precision | recall | F1 | AUC |" in md
    assert figure("loss").higher_is_better is False and figure("top1").higher_is_better
    assert figure("loss").format(0.12345) == "0.123" and figure("top1").format(0.12345) == "12.3"
    assert figure("auc_macro").format(None) == "–"
    assert [k for k in COMPARE_FIELDS if k in COMPARE_FIGURES] == list(COMPARE_FIGURES)
    row = {k: None for k in COMPARE_FIELDS} | {"top1": 0.5, "f1_macro": 0.25}
    table = compare_table([row])
    assert "| top-1 | top-2 | F1 micro | F1 macro |" in table and "| 50.0 | – | – | 25.0 |" in table


def test_importing_the_metrics_and_reports_leaves_scikit_learn_unloaded():
    """The CLI imports these modules; scikit-learn loads only when figures are computed."""
    import subprocess
    import sys

    code = ("import sys, genrekit.evaluation.metrics, genrekit.evaluation.report, genrekit.evaluation.figures\n"
            "print('sklearn' in sys.modules)\n"
            "genrekit.evaluation.metrics.top_k_accuracy([0], [[0.6, 0.3, 0.1]], 1)\n"
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr
