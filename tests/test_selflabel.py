import keras
import numpy as np
import pytest

from course_lib import augment, data, metrics, selflabel


def _mlp(dim, k, learning_rate=1e-2):
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(k, activation="softmax")])
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    return model


def _blobs(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return (np.eye(k)[y] * 3 + rng.normal(size=(n, k))).astype("float32"), y


def test_class_weights_give_every_pseudo_class_the_same_total():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 1)
    w = selflabel.class_weights(labels, 4)
    totals = [w[c] * np.sum(labels == c) for c in range(3)]
    assert np.allclose(totals, totals[0]) and w[3] == 0.0
    w3 = selflabel.class_weights(labels, 3)
    assert np.isclose(sum(w3[c] * np.sum(labels == c) for c in range(3)), len(labels))  # mean weight 1


def test_the_cluster_floor_keeps_a_cluster_without_confident_members():
    probs = np.array([[0.99, 0.01]] * 8 + [[0.4, 0.6]] * 4, np.float32)
    conf = probs.max(1) >= 0.99
    extra = selflabel.cluster_floor(probs, probs.argmax(1), conf)
    assert extra[8:].sum() == 1 and not extra[:8].any()  # a quarter of 8 / 2 clusters: 1 member of cluster 1


def test_a_round_that_lowers_the_confident_count_is_undone():
    x, y = _blobs()
    model = _mlp(3, 3)
    before = [w.copy() for w in model.get_weights()]
    probs = np.eye(3, dtype="float32")[y]  # every sample confident: no round can grow the set
    res = selflabel.self_label(model, x, probs, threshold=0.99, rounds=3, epochs=1, min_steps=0, batch_size=32)
    assert res.rounds_kept == 0 and res.probs is None and res.stop.startswith("round 0")
    assert res.confident[1] < res.confident[0] == 300
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)  # the round's training was undone


def test_a_fresh_student_keeps_round_0_and_stops_when_less_confident_than_its_teacher():
    x, y = _blobs()
    probs = np.eye(3, dtype="float32")[y]  # the teacher: every sample confident
    res = selflabel.self_label(_mlp(3, 3), x, probs, threshold=0.99, rounds=3, epochs=1, min_steps=0,
                               batch_size=32, fresh=True)
    assert res.rounds_kept == 1 and res.probs is not None and res.probs.shape == (300, 3)
    assert res.confident[1] < res.confident[0] and len(res.confident) == 2  # one epoch: less sure than 300
    assert res.stop.startswith("round 0: the student is confident on fewer samples than its teacher")


def test_too_few_confident_samples_warn_and_train_nothing():
    x, _ = _blobs(60)
    with pytest.warns(UserWarning, match="lower `threshold`"):
        res = selflabel.self_label(_mlp(3, 3), x, np.full((60, 3), 1 / 3, np.float32))
    assert res.probs is None and res.rounds_kept == 0 and "skipped" in res.warning


def test_the_cnn_student_learns_digits_from_noisy_pseudo_labels():
    ds = data.load_dataset("digits", "train", max_images=800)
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(len(ds.y)) < 0.3, rng.integers(0, 10, len(ds.y)), ds.y)  # 30% of labels random
    aug = augment.strong_augmenter(colour=False, seed=0)
    student = selflabel.cnn_student(ds.x.shape[1:], 10, width=8, augmenter=aug, learning_rate=3e-3)
    res = selflabel.self_label(student, ds.x, np.eye(10, dtype="float32")[noisy], threshold=0.99, rounds=1,
                               epochs=8, min_steps=0, batch_size=64, augmenter=aug, fresh=True)
    assert res.rounds_kept == 1 and student.output.dtype == "float32"
    assert metrics.hungarian_accuracy(ds.y, res.probs.argmax(1)) > 0.5  # chance 0.1; the noise alone 0.73
    emb = selflabel.student_embedding(student, ds.x)  # what it learned, before the softmax
    assert emb.shape == (len(ds.x), 8 * 8)  # the last block of a width-8 backbone, pooled
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    same = (ds.y[np.argsort(-emb @ emb.T, axis=1)[:, 1:6]] == ds.y[:, None]).mean()
    assert same > 0.5  # its nearest neighbours mostly share the digit (chance 0.1)
    inputs = keras.Input(ds.x.shape[1:])  # on an accelerator the student is wrapped with its augmenter
    wrapped = keras.Model(inputs, student(inputs), name=student.name)
    np.testing.assert_allclose(selflabel.student_embedding(wrapped, ds.x[:50]), emb[:50], atol=1e-5)


def test_reliable_samples_are_those_whose_neighbours_share_their_cluster():
    labels = np.array([0, 0, 0, 1, 1, 0])
    neighbours = np.array([[1, 2], [0, 2], [0, 5], [4, 5], [3, 0], [3, 4]])
    agree = [1, 1, 1, 0.5, 0.5, 0]  # share of each sample's neighbours in its cluster
    np.testing.assert_array_equal(selflabel.reliable(labels, neighbours, 0.5), np.array(agree) >= 0.5)
    np.testing.assert_array_equal(selflabel.reliable(labels, neighbours, 0.8), np.array(agree) >= 0.8)


def test_reliable_samples_are_purer_than_all_pseudo_labels_on_blobs():
    from course_lib.clustering import nearest_neighbours

    x, y = _blobs(600)
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(len(y)) < 0.3, rng.integers(0, 3, len(y)), y)  # a teacher wrong on ~20%
    keep = selflabel.reliable(noisy, nearest_neighbours(x, 10), 0.8)
    assert 0.3 < keep.mean() < 0.95
    assert (noisy[keep] == y[keep]).mean() > (noisy == y).mean() + 0.1  # the wrong labels disagree with neighbours


def test_round_0_trains_on_the_start_mask_when_given():
    x, y = _blobs(60)
    start = np.zeros(60, bool)
    start[:5] = True  # fewer than the batch needs: the student is not trained, and the message names `start`
    with pytest.warns(UserWarning, match="selected by `start`"):
        res = selflabel.self_label(_mlp(3, 3), x, np.eye(3, dtype="float32")[y], start=start, fresh=True)
    assert res.probs is None and res.rounds_kept == 0
