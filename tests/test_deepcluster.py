import warnings

import keras
import numpy as np
import pytest

from course_lib import metrics
from course_lib.data import load_dataset
from course_lib.methods import get_method
from course_lib.methods import deepcluster
from course_lib.methods.deepcluster import DeepCluster, fill_empty_clusters, run_kmeans, uniform_cluster_sample
from course_lib.methods.features import hog_features


def test_uniform_sampler_draws_every_non_empty_cluster_equally():
    # very unequal clusters (1, 7, 40 and 2,000 members), and ids 1 and 4 empty
    labels = np.repeat([0, 2, 3, 5], [1, 7, 40, 2000])
    idx = uniform_cluster_sample(labels, 1000, seed=0)
    assert len(idx) == 1000
    counts = np.bincount(labels[idx], minlength=6)
    assert counts[[1, 4]].sum() == 0  # empty clusters are skipped
    assert counts[[0, 2, 3, 5]].min() >= 249 and counts.max() <= 251  # 1000 / 4 each, +-1
    assert len(np.unique(idx[labels[idx] == 5])) == 250  # a big cluster is drawn without replacement


def test_uniform_sampler_is_seeded():
    labels = np.random.default_rng(0).integers(0, 10, 500)
    assert np.array_equal(uniform_cluster_sample(labels, 300, 1), uniform_cluster_sample(labels, 300, 1))


def test_fill_empty_clusters_splits_a_large_cluster():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    labels = np.repeat([0, 1, 2], [20, 30, 250])  # clusters 3 and 4 empty
    fixed = fill_empty_clusters(z, labels, 5, seed=0)
    sizes = np.bincount(fixed, minlength=5)
    assert (sizes > 0).all() and sizes.sum() == 300
    assert set(np.unique(fixed[labels == 0])) <= {0, 3, 4}  # members only move to the new clusters


def test_kmeans_on_duplicates_leaves_no_cluster_empty():
    # 6 distinct points repeated: KMeans with k = 10 cannot fill every cluster by itself
    z = np.repeat(np.eye(6, dtype=np.float32), 20, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels, _ = run_kmeans(z, 10, seed=0)
    assert len(np.unique(labels)) == 10


def test_deepcluster_is_registered_with_profiles():
    cls = get_method("deepcluster")
    assert cls is DeepCluster and {"quick", "standard", "full"} <= set(cls.presets)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train", image_size=16)


def test_short_deepcluster_run_on_digits_beats_chance(digits):
    ds = digits
    # chance (the largest class) is about 0.10
    model = DeepCluster(10, seed=0, epochs=3, reassign=2, widths=(16, 32, 48, 48, 32), fc=128, k=50,
                        pca_dim=32).fit(ds.x)
    scores = metrics.evaluate(ds.y, model.labels_)
    assert scores["acc"] > 0.5 and scores["nmi"] > 0.45
    assert model.clusterer_.pipeline.pca_.n_components_ == 20  # final KMeans: 2K whitened directions by default
    assert len(model.history_["nmi_prev"]) == 3 and np.isnan(model.history_["nmi_prev"][0])
    assert 0 < model.history_["nmi_prev"][-1] <= 1
    over = model.overcluster_labels_
    assert len(np.unique(over)) == 50  # over-clustered assignment: scored many-to-one only
    assert np.array_equal(model.predict(ds.x[:50]), model.labels_[:50])


def test_killed_run_resumes_from_its_last_finished_epoch(digits, tmp_path):
    x = digits.x[:300]
    small = dict(widths=(8, 8, 8, 8, 8), fc=32, k=20, pca_dim=16, final_pca_dim=16, final_n_init=1,
                 checkpoint_dir=str(tmp_path / "ckpt"))
    first = DeepCluster(10, seed=0, epochs=1, **small).fit(x)  # "killed" after epoch 1 of 2
    resumed = DeepCluster(10, seed=0, epochs=2, **small)
    resumed.fit(x)
    assert resumed.history_["epoch"] == [0, 1]  # epoch 0 from the checkpoint, epoch 1 run now
    assert resumed.history_["loss"][0] == first.history_["loss"][0]
    assert 0 < resumed.history_["nmi_prev"][1] <= 1  # compared with the checkpoint's assignment
    assert (tmp_path / "ckpt" / "convnet.weights.h5").is_file()


def test_hog_start_clusters_hog_at_epoch_0_and_the_network_after(digits, monkeypatch):
    x = digits.x[:300]
    small = dict(widths=(8, 8, 8, 8, 8), fc=32, k=20, pca_dim=16, final_pca_dim=16, final_n_init=1, epochs=2)
    for name, first in (("deepcluster-hog", hog_features(x[:1]).shape[1]), ("deepcluster", 32)):
        seen = []
        original = deepcluster.preprocess_features

        def spy(f, *args, **kwargs):
            seen.append(f.shape[1])
            return original(f, *args, **kwargs)

        monkeypatch.setattr(deepcluster, "preprocess_features", spy)
        get_method(name)(10, seed=0, **small).fit(x)
        monkeypatch.undo()
        assert seen == [first, 32], name  # epoch 0: HOG (deepcluster-hog) or the random convnet; then the convnet
    assert "init" not in DeepCluster.defaults  # one name, one algorithm: the start is the method's, not an option


def test_fit_runs_the_papers_epoch(digits, monkeypatch):
    calls = []
    for fn in ("run_kmeans", "uniform_cluster_sample", "reset_top_layer", "train_epoch"):
        original = getattr(deepcluster, fn)
        monkeypatch.setattr(deepcluster, fn, lambda *a, _f=original, _n=fn, **k: calls.append(_n) or _f(*a, **k))
    small = dict(widths=(8, 8, 8, 8, 8), fc=32, k=20, pca_dim=16, final_pca_dim=16, final_n_init=1, epochs=2)
    DeepCluster(10, seed=0, **small).fit(digits.x[:200])
    assert calls == ["run_kmeans", "uniform_cluster_sample", "reset_top_layer", "train_epoch"] * 2


def test_reset_top_layer_redraws_the_top_and_zeroes_its_moments():
    convnet = deepcluster.alexnet_small((16, 16, 1), (4, 4, 4, 4, 4), fc=8)
    model = deepcluster.training_model(convnet, 5, keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 1)).astype("uint8")
    model.fit(x, np.arange(32) % 5, epochs=1, verbose=0)
    top = model.get_layer("top_layer")
    before = [np.array(w) for w in convnet.weights]
    deepcluster.reset_top_layer(model, seed=3)
    kernel = np.asarray(top.kernel)
    assert 0.005 < kernel.std() < 0.015 and np.all(np.asarray(top.bias) == 0)
    moments = [np.asarray(v) for v in model.optimizer.variables if "top_layer" in v.path]
    assert moments and all(np.all(m == 0) for m in moments)
    assert any(np.any(np.asarray(v) != 0) for v in model.optimizer.variables
               if "conv" in v.path and not v.path.endswith("learning_rate"))  # the convnet keeps its moments
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, convnet.weights))
