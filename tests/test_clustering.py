import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from course_lib import clustering, data, metrics


def test_k_larger_than_the_number_of_images_is_a_value_error():
    with pytest.raises(ValueError, match="cannot make 10 clusters from 5 samples"):
        clustering.FeatureClusterer(10).fit(np.random.rand(5, 3))


@pytest.mark.parametrize("algorithm", clustering.ALGORITHMS)
def test_every_algorithm_separates_blobs_and_predicts_new_points(algorithm):
    x, y = make_blobs(600, n_features=8, centers=4, cluster_std=0.5, random_state=0)
    fc = clustering.FeatureClusterer(4, pca_dim=None, l2=False, algorithm=algorithm, n_init=3)
    assert metrics.hungarian_accuracy(y, fc.fit_predict(x)) > 0.99
    assert metrics.hungarian_accuracy(y, fc.predict(x + 0.01)) > 0.99


def test_pixel_features_crop_and_standardise():
    x = np.arange(2 * 8 * 8 * 1, dtype=np.uint8).reshape(2, 8, 8, 1)
    f = clustering.pixel_features(x, centre_crop=0.5)
    assert f.shape == (2, 16) and f[0, 0] == pytest.approx(x[0, 2, 2, 0] / 255)
    s = clustering.pixel_features(x, standardise=True)
    np.testing.assert_allclose(s.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(s.std(1), 1, atol=1e-3)
    with pytest.raises(ValueError, match="centre_crop"):
        clustering.pixel_features(x, centre_crop=0)


def test_pipeline_whitens_and_normalises():
    f = np.random.default_rng(0).normal(size=(300, 20)) * np.arange(1, 21)
    z = clustering.FeaturePipeline(pca_dim=5, whiten=True, l2=False).fit_transform(f)
    np.testing.assert_allclose(z.std(0), 1, rtol=0.05)
    z2 = clustering.FeaturePipeline(pca_dim=5, l2=True).fit_transform(f)
    np.testing.assert_allclose(np.linalg.norm(z2, axis=1), 1, rtol=1e-5)


def _blobs(n: int, seed: int = 0):
    """n rows of 4 well-separated Gaussian blobs in 8 dimensions, and their blob ids."""
    rng = np.random.default_rng(seed)
    y = rng.integers(4, size=n)
    return (10 * np.eye(4, 8)[y] + rng.normal(size=(n, 8))).astype(np.float32), y


def test_agglomerative_above_the_cap_runs_ward_on_a_sample_and_labels_every_row():
    x, y = _blobs(2000)
    agg = clustering.make_clusterer(4, "agglomerative", seed=0, max_rows=300)
    labels = agg.fit_predict(x)
    assert labels.shape == (2000,) and agg.n_fitted_ == 300 and agg.sampled_
    assert metrics.hungarian_accuracy(y, labels) >= 0.99


def test_agglomerative_below_the_cap_is_plain_ward():
    x, _ = _blobs(500)
    agg = clustering.make_clusterer(4, "agglomerative")
    labels = agg.fit_predict(x)
    assert not agg.sampled_ and agg.n_fitted_ == 500
    np.testing.assert_array_equal(labels, AgglomerativeClustering(4, linkage="ward").fit_predict(x))


def test_feature_clusterer_agglomerative_above_the_cap_labels_and_predicts_every_row():
    x, y = _blobs(1500)
    fc = clustering.FeatureClusterer(4, pca_dim=None, l2=False, algorithm="agglomerative", max_rows=200).fit(x)
    assert fc.labels_.shape == (1500,) and fc.clusterer_.sampled_ and fc.clusterer_.n_fitted_ == 200
    assert metrics.hungarian_accuracy(y, fc.labels_) >= 0.99
    x_new, y_new = _blobs(300, seed=1)
    assert metrics.hungarian_accuracy(y_new, fc.predict(x_new)) >= 0.99


def test_merge_by_links_joins_the_halves_of_a_split_class():
    x, y = make_blobs(300, centers=3, cluster_std=0.5, random_state=0)
    neighbours = clustering.nearest_neighbours(x, 10, metric="euclidean")
    halves = np.where((y == 0) & (x[:, 0] > np.median(x[y == 0, 0])), 3, y)  # class 0 split into clusters 0 and 3
    probs = np.eye(4)[halves] * 0.96 + 0.01
    merge = clustering.merge_by_links(probs, neighbours, 3)
    assert merge.shape == (4, 3) and (merge.sum(1) == 1).all() and (merge.sum(0) >= 1).all()
    assert adjusted_rand_score(y, (probs @ merge).argmax(1)) == 1.0
    np.testing.assert_allclose((probs @ merge).sum(1), 1, atol=1e-6)  # still probabilities


def test_merge_by_links_places_a_cluster_no_sample_chose_and_refuses_to_split():
    x, y = make_blobs(200, centers=2, cluster_std=0.5, random_state=1)
    neighbours = clustering.nearest_neighbours(x, 5, metric="euclidean")
    probs = np.full((200, 3), 1e-4)
    probs[np.arange(200), y] = 1 - 2e-4  # cluster 2: nobody's choice
    merge = clustering.merge_by_links(probs, neighbours, 2)
    assert (merge.sum(1) == 1).all() and adjusted_rand_score(y, (probs @ merge).argmax(1)) == 1.0
    with pytest.raises(ValueError, match="over-cluster"):
        clustering.merge_by_links(probs, neighbours, 4)


def test_merge_linked_pairs_joins_the_halves_of_a_class_and_leaves_real_classes_alone():
    """issue 20: a class cut in two is one closed group of neighbour links, R(half, half) > 1; on real digits
    the true classes keep most of their strays elsewhere (R < 1), so none is joined; no number of clusters given."""
    ds = data.load_dataset("digits", "train")
    x, y = ds.x.reshape(len(ds.x), -1).astype("float32"), ds.y
    neighbours = clustering.nearest_neighbours(x, 10, metric="cosine")
    assert (y[neighbours] != y[:, None]).mean() > 0.02  # the classes touch: links between them exist
    merge, joins = clustering.merge_linked_pairs(y, neighbours, 10)
    assert joins == [] and (merge == np.eye(10)).all()
    four = np.flatnonzero(y == 4)  # the 4s cut along their first principal direction: a near/far-like split
    centred = x[four] - x[four].mean(0)
    side = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    halves = y.copy()
    halves[four[side > np.median(side)]] = 10
    merge, joins = clustering.merge_linked_pairs(halves, neighbours, 11)
    assert [(a, b) for a, b, _ in joins] == [(4, 10)] and joins[0][2] > 1
    merged = (np.eye(11)[halves] @ merge).argmax(1)
    assert adjusted_rand_score(y, merged) == 1.0 and merge[:, 10].sum() == 0  # the joined-away cluster is empty


def test_joint_pipeline_gives_the_second_part_its_weight_in_every_similarity():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 20)), rng.normal(size=(300, 6))
    joint = clustering.JointPipeline(tail=6, weight=0.5, pca_dim=8, whiten=True).fit(np.hstack([a, b]))
    z = joint.transform(np.hstack([a, b]))
    assert z.shape == (300, 8 + 6) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    za = clustering.FeaturePipeline(8, whiten=True).fit_transform(a)  # each part alone, unit length
    zb = clustering.FeaturePipeline(8, whiten=True).fit_transform(b)  # 6 columns: no PCA, L2 only
    np.testing.assert_allclose(z @ z.T, (za @ za.T + 0.25 * zb @ zb.T) / 1.25, atol=1e-4)
