"""Seed 001's embeddings (autoencoder, pair classifier, dot-product embedding), seed 004's K-means network,
nearest neighbours and neighbour accuracy."""
import time

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from course_lib import clustering, data, metrics
from course_lib.methods import get_method

# ---------------------------------------------------------------- K-means as a one-layer network


@pytest.mark.parametrize("learning_rate", [None, 0.3])
def test_kmeans_network_inertia_is_within_5_percent_of_sklearn(learning_rate):
    x, y = make_blobs(3000, n_features=10, centers=8, cluster_std=2.0, random_state=0)
    km = KMeans(8, n_init=10, random_state=0).fit(x)
    net = clustering.KMeansNetwork(8, epochs=10, learning_rate=learning_rate, batch_size=128, seed=0).fit(x)
    assert net.inertia_ <= 1.05 * km.inertia_
    assert metrics.hungarian_accuracy(y, net.labels_) > 0.99
    np.testing.assert_array_equal(net.predict(x), net.labels_)
    assert net.weights_.shape == (10, 8) and net.cluster_centers_.shape == (8, 10)


def test_kmeans_network_winner_is_the_nearest_weight_vector_not_the_largest_dot_product():
    net = clustering.KMeansNetwork(2, epochs=1)
    net.weights_ = np.array([[1.0, 10.0], [0.0, 0.0]], np.float32)  # w_0 = (1, 0), w_1 = (10, 0)
    x = np.array([[2.0, 0.0]], np.float32)
    assert (x @ net.weights_).argmax() == 1  # a plain dot product picks the long, far vector
    assert net.predict(x)[0] == 0  # the network's bias -|w|^2/2 makes it pick the nearest


def test_kmeans_network_checks_k():
    with pytest.raises(ValueError, match="cannot make 5 clusters from 3 samples"):
        clustering.KMeansNetwork(5).fit(np.random.rand(3, 2))


# ---------------------------------------------------------------- neighbours
def test_nearest_neighbours_cosine_euclidean_and_sklearn_agree_on_a_hand_made_set():
    f = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [-1, 0]], np.float32)
    expected = [[1, 3], [0, 3], [3, 1], [2, 1], [2, 3]]
    assert clustering.nearest_neighbours(f, 2).tolist() == expected
    assert clustering.nearest_neighbours(f, 2, metric="euclidean").tolist() == expected
    assert clustering.nearest_neighbours(f, 1, metric="manhattan").tolist() == [[1], [0], [3], [2], [0]]
    with pytest.raises(ValueError, match="k must be"):
        clustering.nearest_neighbours(f, 5)


def test_nearest_neighbours_of_a_duplicated_vector_include_its_duplicate():
    x = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    x[2500] = x[10]
    for metric in ("cosine", "euclidean", "manhattan"):
        nn = clustering.nearest_neighbours(x, 5, metric=metric)
        assert nn[10, 0] == 2500 and nn[2500, 0] == 10
        assert not (nn == np.arange(len(x))[:, None]).any()  # never itself


def test_nearest_neighbours_match_brute_force_and_skip_the_own_group():
    x = np.random.default_rng(1).normal(size=(2500, 8)).astype(np.float32)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(clustering.nearest_neighbours(x, 7, chunk_size=300), expected)
    groups = np.arange(len(x)) // 25
    nn = clustering.nearest_neighbours(x, 7, groups=groups)
    assert not (groups[nn] == groups[:, None]).any()


def test_neighbour_accuracy_exact_value_and_groups():
    f = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [-1, 0]], np.float32)
    y = [0, 0, 1, 1, 0]
    # k=1: neighbours 1, 0, 3, 2, 2 -> labels right for the first four, wrong for the last
    assert metrics.neighbour_accuracy(f, y, k=1) == pytest.approx(0.8)
    # k=2: neighbours [1,3] [0,3] [3,1] [2,1] [2,3] -> 1+1+1+1+0 right of 10
    assert metrics.neighbour_accuracy(f, y, k=2) == pytest.approx(0.4)
    # the pairs (0, 1) and (2, 3) are one group each: every nearest other-group neighbour has the other class
    assert metrics.neighbour_accuracy(f, y, k=1, groups=[0, 0, 1, 1, 2]) == 0.0


# ---------------------------------------------------------------- learned embeddings on real digits
@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits", "train", image_size=16)


@pytest.fixture(scope="module")
def autoencoder(digits):
    import keras

    keras.utils.set_random_seed(0)
    m = get_method("autoencoder-kmeans")(10, seed=0, epochs=3, width=16, crop=1.0, batch_size=64, n_init=3)
    return m.fit(digits.x)


def test_autoencoder_reconstruction_loss_decreases(autoencoder):
    loss = autoencoder.history_["loss"]
    assert len(loss) == 3 and loss[-1] < 0.8 * loss[0]


def test_autoencoder_kmeans_beats_chance_clearly_on_digits(autoencoder, digits):
    scores = metrics.evaluate(digits.y, autoencoder.labels_)
    assert scores["acc"] > 0.5 and scores["nmi"] > 0.5  # measured 0.67-0.82; chance: ACC ~0.1, NMI ~0
    np.testing.assert_array_equal(autoencoder.predict(digits.x[:50]), autoencoder.labels_[:50])


def test_autoencoder_reconstructs_images_and_exposes_its_parts(autoencoder, digits):
    rec = autoencoder.reconstruct(digits.x[:8])
    assert rec.shape == digits.x[:8].shape and rec.dtype == np.uint8
    err = np.abs(rec.astype(float) - digits.x[:8]).mean()
    assert err < np.abs(digits.x[:8].astype(float) - digits.x[:8].mean()).mean()  # better than a flat image
    assert autoencoder.embed(digits.x[:4]).shape == (4, 128)
    assert autoencoder.decoder_ is not None and autoencoder.encoder_ is not None


@pytest.mark.parametrize("name", ["pair-kmeans", "similarity-kmeans"])
def test_pair_and_similarity_embeddings_put_same_digit_neighbours_together(name, digits):
    import keras

    keras.utils.set_random_seed(0)
    m = get_method(name)(10, seed=0, epochs=3, width=16, batch_size=128, n_init=3, augment="weak")
    m.train(digits.x)
    assert np.isfinite(m.history_["loss"]).all() and m.history_["loss"][-1] < m.history_["loss"][0]
    f = m.embed(digits.x)
    # measured 0.82-0.93 (seeds 0, 1); raw pixels score 0.95 on these easy 8x8 digits; chance is 0.1
    assert metrics.neighbour_accuracy(f, digits.y, k=10) > 0.6


def test_training_resumes_from_its_checkpoint(tmp_path, digits):
    x = digits.x[:256]
    opts = dict(seed=0, width=8, batch_size=64, n_init=1, crop=1.0, checkpoint_dir=str(tmp_path / "ckpt"))
    get_method("autoencoder-kmeans")(10, epochs=2, **opts).train(x)
    t0 = time.perf_counter()
    resumed = get_method("autoencoder-kmeans")(10, epochs=3, **opts).train(x)
    assert len(resumed.history_["loss"]) == 1  # epochs 1-2 restored, only epoch 3 run
    assert time.perf_counter() - t0 < 120


def test_embedding_methods_are_registered_with_presets():
    for name in ("autoencoder-kmeans", "pair-kmeans", "similarity-kmeans"):
        cls = get_method(name)
        assert set(cls.presets) == {"quick", "standard", "full"}
        m = cls(5)
        assert m.params["pca_dim"] == 50 and m.params["whiten"] and m.params["l2"]  # as pixels-kmeans
