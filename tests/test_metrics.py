import numpy as np
import pytest

from course_lib import metrics


def test_hungarian_recovers_a_permuted_perfect_clustering():
    y = np.repeat(np.arange(5), 20)
    perm = np.array([3, 0, 4, 1, 2])
    pred = perm[y]
    assert metrics.hungarian_accuracy(y, pred) == 1.0
    assert metrics.hungarian_mapping(y, pred) == {3: 0, 0: 1, 4: 2, 1: 3, 2: 4}
    scores = metrics.evaluate(y, pred)
    assert scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)


def test_hand_computed_accuracies():
    # classes   0 0 0 1 1 1 2 2 2
    # clusters  1 1 0 0 0 0 2 2 1
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    c = np.array([1, 1, 0, 0, 0, 0, 2, 2, 1])
    # contingency (cluster x class): c0: [1,3,0]  c1: [2,0,1]  c2: [0,0,2] -> best one-to-one 3+2+2 = 7
    assert metrics.hungarian_accuracy(y, c) == pytest.approx(7 / 9)
    # majority: c0 -> 1 (3), c1 -> 0 (2), c2 -> 2 (2) -> 7/9 as well here
    assert metrics.majority_accuracy(y, c) == pytest.approx(7 / 9)
    np.testing.assert_array_equal(metrics.contingency(y, c), [[1, 3, 0], [2, 0, 1], [0, 0, 2]])


def test_many_to_one_flatters_over_clustering_but_acc_does_not():
    y = np.repeat(np.arange(3), 10)
    one_per_sample = np.arange(30)
    assert metrics.majority_accuracy(y, one_per_sample) == 1.0
    assert metrics.hungarian_accuracy(y, one_per_sample) == pytest.approx(3 / 30)


def test_collapsed_clustering_scores_the_largest_class_share():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    scores = metrics.evaluate(y, np.zeros(10, int))
    assert scores["acc"] == pytest.approx(0.6)
    assert scores["nmi"] == pytest.approx(0.0) and scores["largest_cluster"] == 1.0


def test_top5_and_confusion_matrix():
    y = np.array([0, 1, 2, 3, 4, 5])
    proba = np.eye(6)[[1, 2, 3, 4, 5, 0]]  # cluster i+1 holds class i: Hungarian fixes it
    assert metrics.top_k_accuracy(y, proba, k=1) == 1.0
    cm = metrics.confusion_matrix(y, proba.argmax(1))
    np.testing.assert_array_equal(cm, np.eye(6, dtype=int))
    wrong = np.full((6, 6), 0.0)
    wrong[:, 0] = 1.0
    wrong[np.arange(6), (np.arange(6) + 1) % 6] = 0.5  # second choice is the right-after-mapping class
    assert metrics.top_k_accuracy(y, wrong, k=2, mapping={i: (i - 1) % 6 for i in range(6)}) == 1.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="6 labels but y_pred has 5"):
        metrics.hungarian_accuracy(np.zeros(6, int), np.zeros(5, int))
