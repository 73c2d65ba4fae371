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


def test_top2_with_ties_counts_against_the_true_class():
    # sample 0: true a, probs a=.2 b=.4 c=.4 -> a ranks 3rd (two higher): miss
    # sample 1: true b, probs a=.5 b=.25 c=.25 -> tie with c for 2nd: sklearn counts a tie as a miss
    # sample 2: true c, probs c highest: hit
    y = np.array([0, 1, 2])
    p = np.array([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    assert top_k_accuracy(y, p, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y, p, 2) == pytest.approx(1 / 3)
    from sklearn.metrics import top_k_accuracy_score

    assert top_k_accuracy(y, p, 2) == pytest.approx(top_k_accuracy_score(y, p, k=2, labels=[0, 1, 2]))
    # without the tie, the second sample is a top-2 hit
    p2 = p.copy()
    p2[1] = [0.5, 0.3, 0.2]
    assert top_k_accuracy(y, p2, 2) == pytest.approx(2 / 3)


def test_a_class_absent_from_predictions():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[.9, .1, 0], [.8, .2, 0], [.1, .9, 0], [.6, .4, 0], [.2, .8, 0], [.7, .3, 0]])
    f = classification_figures(y, p, LABELS)
    assert f["top1"] == pytest.approx(3 / 6)
    # per class: a P=2/4 R=1, b P=1/2 R=1/2, c never predicted: P=0 (zero_division) R=0
    assert f["per_genre"]["a"]["precision"] == pytest.approx(0.5)
    assert f["per_genre"]["b"]["recall"] == pytest.approx(0.5)
    assert f["per_genre"]["c"]["precision"] == 0 and f["per_genre"]["c"]["recall"] == 0
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
