import numpy as np
import pytest

from course_lib import benchmark, data
from course_lib.methods import scan


def test_mined_neighbours_of_a_duplicated_image_include_its_duplicate():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 32)).astype("float32")
    f[150] = f[7]  # a duplicate
    nb = scan.mine_neighbours(f, k=5)
    assert nb.shape == (200, 5) and nb[7, 0] == 150 and nb[150, 0] == 7
    assert not (nb == np.arange(200)[:, None]).any()  # never its own neighbour


def test_neighbour_agreement_with_and_without_groups():
    y = np.array([0, 0, 1, 1])
    groups = np.array([0, 0, 1, 2])
    nb = np.array([[1], [0], [3], [2]])
    a = scan.neighbour_label_agreement(nb, y, groups)
    assert a["neighbour_acc"] == 1.0 and a["same_group_share"] == 0.5 and a["neighbour_acc_other_groups"] == 1.0


def test_scan_head_losses_prefer_the_head_that_agrees_with_neighbours():
    nb = np.array([[1], [0], [3], [2]])
    good = np.eye(2)[[0, 0, 1, 1]]
    bad = np.eye(2)[[0, 1, 0, 1]] * 0.98 + 0.01
    assert np.argmin(scan.scan_head_losses(np.stack([bad, good]), nb, 1.0)) == 1


def test_no_confident_sample_is_said_not_crashed():
    est = scan.SCAN(3, threshold=0.99, selflabel_rounds=2)
    est.backbone_ = None
    x = np.zeros((30, 8, 8, 1), np.uint8)
    with pytest.warns(UserWarning, match="lower `threshold`"):
        assert est.self_label(x, np.full((30, 3), 1 / 3)) is None
    assert "selflabel_warning" in est.log_


@pytest.mark.parametrize("views", [0, 2])
def test_scan_on_real_digits_learns_and_reports_every_step(views):
    r = benchmark.run("scan", "digits", profile="quick", verbose=False,
                      options={"selflabel_rounds": 1, "threshold": 0.9, "views": views})
    assert set(r["steps"]) == {"pretext+kmeans", "scan", "selflabel"}
    assert r["steps"]["scan"]["acc"] > 0.6 and r["acc"] > 0.6  # chance is 0.1
    assert len(r["log"]["scan_head_losses"]) == 5 and r["log"]["best_head"] == int(np.argmin(r["log"]["scan_head_losses"]))


@pytest.mark.parametrize("pretext", ["simclr", "rotnet"])
def test_cnn_pretexts_train_and_feed_the_mining(pretext, tmp_path):
    ds = data.load_dataset("digits", "train", max_images=400)
    est = scan.SCAN(10, pretext=pretext, pretext_epochs=1, batch_size=64, width=8, cache_dir=str(tmp_path))
    f = est.pretext(ds.x)
    assert f.shape == (400, 64) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-4)
    assert len(est.log_["pretext_history"]["loss"]) == 1
    again = scan.SCAN(10, pretext=pretext, pretext_epochs=1, batch_size=64, width=8, cache_dir=str(tmp_path))
    np.testing.assert_allclose(again.pretext(ds.x), f, atol=1e-5)  # resumed from the cached step
    assert "pretext_history" not in again.log_


def test_a_nan_loss_stops_the_scan_step_with_advice():
    est = scan.SCAN(3, n_heads=1, scan_epochs=1, batch_size=8)
    est.backbone_ = None
    feats = np.full((16, 4), np.nan, np.float32)  # broken features: the loss becomes NaN at once
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        est.cluster(np.zeros((16, 8, 8, 1), np.uint8), feats, np.tile(np.arange(1, 3), (16, 1)) % 16)


def test_augmented_views_are_described_once_beside_the_originals():
    ds = data.load_dataset("digits", "train", max_images=120)
    est = scan.SCAN(10, pretext="hog", views=2)
    f = est.pretext(ds.x)
    assert f.shape == (120, 64) and est.view_features_.shape == (2, 120, 64)
    assert np.allclose(np.linalg.norm(est.view_features_, axis=2), 1, atol=1e-4)
    assert not np.allclose(est.view_features_[0], f)  # the copies are augmented, not the originals again
    # an augmented copy stays closer to its own original than to the other images, on average
    sims = est.view_features_[0] @ f.T
    assert np.mean(np.diag(sims)) > np.mean(sims) + 0.2


@pytest.mark.parametrize("train", [scan.train_simclr, scan.train_rotnet])
def test_a_cut_off_pretext_continues_after_its_last_finished_epoch(train, tmp_path):
    """A Colab disconnect during the 200 pretext epochs: rerunning continues, it does not start over."""
    x = data.load_dataset("digits", "train", max_images=128).x
    kw = dict(batch_size=64, width=8, lr=1e-3, seed=0, checkpoint=tmp_path / "pretext-partial")
    if train is scan.train_simclr:
        kw.update(temperature=0.5, colour=False)
    _, first = train(x, 1, **kw)  # "killed" after epoch 1 of 2
    backbone, resumed = train(x, 2, **kw)
    assert resumed["loss"][0] == first["loss"][0] and len(resumed["loss"]) == 2  # epoch 1 read back, epoch 2 run
    assert (tmp_path / "pretext-partial.weights.h5").is_file()
    _, done = train(x, 2, **kw)  # nothing left to run
    assert done["loss"] == resumed["loss"]
