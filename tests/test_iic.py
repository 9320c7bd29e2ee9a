"""IIC: the training model lowers the IIC loss on real digits and ends above chance; the collapse
detector fires on a collapsed assignment; the reported sub-head is the one with the lowest loss."""
import warnings

import keras
import numpy as np
import pytest

from course_lib import data, losses, metrics, runtime
from course_lib.methods import get_method
from course_lib.methods.iic import (IIC, AlternateHeads, FeatureViewBatches, IICMonitor, collapse_warning,
                                    evaluate_sub_heads, mean_entropy, select_sub_head)

# sklearn's digits fill their 8x8 frame: crop little. A small, fast network and the summed loss of both heads.
SMALL = dict(width=16, input_size=16, crop=1.0, view_scale=(0.7, 1.0), lamb=1.5, batch_images=128, copies=3,
             sub_heads=3, overcluster=3, heads="sum", learning_rate=3e-3, epochs=8, select_images=512,
             monitor_images=256)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def fitted():
    """IIC fitted on scikit-learn's real handwritten digits (1,437 training images), labels for display only."""
    runtime.seed_everything(0)
    ds = data.load_dataset("digits", "train")
    method = IIC(ds.n_classes, seed=0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # early epochs may look collapsed
        method.fit(ds.x, validation=(ds.x[:500], ds.y[:500]))
    return method, ds


def test_registered():
    assert get_method("iic") is IIC
    quick = IIC.for_profile(10, runtime.get_profile("quick"))
    assert quick.params["sub_heads"] >= 2 and quick.params["overcluster"] > 1 and quick.params["copies"] > 1


def test_batches_pair_each_image_with_its_copies():
    x = np.random.default_rng(0).integers(0, 255, (40, 28, 28, 1), dtype=np.uint8)
    method = IIC(10, batch_images=16, copies=3, input_size=24)
    (orig, views), = next(iter(method.batches(x)))
    assert tuple(orig.shape) == (16, 24, 24, 1) and tuple(views.shape) == (48, 24, 24, 1)
    assert IIC(43, copies=5).batch_images() * 5 >= 10 * 43  # >= ~10 pairs per cluster by default


def test_loss_is_the_mean_of_the_sub_heads_iic_losses():
    method = IIC(10, width=8, input_size=16, sub_heads=2, overcluster=2, copies=2, batch_images=8)
    model = method.build((16, 16, 1))
    x = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 1), dtype=np.uint8)
    batch, = next(iter(method.batches(x)))
    y_pred = model(batch, training=False)
    assert set(y_pred) == {"A", "B"}  # "AB": both heads
    b = list(_np(model.sub_head_losses(y_pred, "B")))
    a = list(_np(model.sub_head_losses(y_pred, "A")))
    # the paper's pairing: the original's probabilities tiled against every copy's, one row per pair
    orig, views = batch
    p_orig = model._probs(model.head_b, model.trunk(orig), 10)
    p_views = model._probs(model.head_b, model.trunk(views), 10)
    tiled = np.repeat(_np(p_orig), 2, axis=0)  # copies stacked image by image
    assert b[1] == pytest.approx(float(_np(losses.iic_loss(tiled[:, 1], _np(p_views)[:, 1]))), abs=1e-5)
    assert float(_np(model.compute_loss(y_pred=y_pred))) == pytest.approx(np.mean(a) + np.mean(b), abs=1e-5)
    model.active_heads = "B"  # head B's epoch: head A is not computed at all
    y_b = model(batch, training=False)
    assert set(y_b) == {"B"} and float(_np(model.compute_loss(y_pred=y_b))) == pytest.approx(np.mean(b), abs=1e-5)
    model.active_heads = "A"
    y_a = model(batch, training=False)
    assert set(y_a) == {"A"} and float(_np(model.compute_loss(y_pred=y_a))) == pytest.approx(np.mean(a), abs=1e-5)


def test_head_a_can_have_fewer_sub_heads():
    method = IIC(4, trunk="hog", hidden=16, sub_heads=3, sub_heads_a=1, overcluster=2, copies=2, batch_images=16)
    model = method.build((8,))
    assert model.head_a.kernel.shape == (16, 8) and model.head_b.kernel.shape == (16, 12)
    feats = np.random.default_rng(0).standard_normal((3, 16, 8)).astype("float32")
    (pair,) = FeatureViewBatches(feats, 16, shuffle=False)[0]
    y_pred = model(pair, training=False)
    assert tuple(y_pred["A"][0].shape) == (16, 1, 8) and tuple(y_pred["B"][1].shape) == (16, 3, 4)
    a = model.sub_head_losses(y_pred, "A")
    b = model.sub_head_losses(y_pred, "B")
    assert len(a) == 1 and len(b) == 3
    assert float(_np(model.compute_loss(y_pred=y_pred))) == pytest.approx(
        float(_np(a)[0]) + np.mean(_np(b)), abs=1e-5)


def test_alternating_heads_train_only_the_epochs_head():
    method = IIC(4, trunk="hog", hidden=16, sub_heads=2, overcluster=2, copies=2, batch_images=16)
    model = method.build((8,))
    model.compile(optimizer="adam")
    feats = np.random.default_rng(0).standard_normal((3, 64, 8)).astype("float32")
    before = {h: np.array(getattr(model, h).kernel) for h in ("head_a", "head_b")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hist = model.fit(FeatureViewBatches(feats, 16), epochs=1, verbose=0, callbacks=[AlternateHeads("B")])
    assert np.array_equal(before["head_a"], np.array(model.head_a.kernel))  # head A untouched
    assert not np.array_equal(before["head_b"], np.array(model.head_b.kernel))
    assert np.isnan(hist.history["loss_A"][0]) and np.isfinite(hist.history["loss_B0"][0])


def test_training_lowers_the_loss_and_beats_chance_on_digits(fitted):
    method, ds = fitted
    loss = method.history_["loss"]
    assert loss[-1] < loss[0] - 0.3, loss  # -I(z, z') falls: the views agree more and more
    assert all(k in method.history_ for k in ("entropy", "largest_cluster", "display_acc", "loss_A", "loss_B0"))
    test = data.load_dataset("digits", "test")
    acc = metrics.hungarian_accuracy(test.y, method.predict(test.x))
    assert acc > 0.3, acc  # chance: ~0.1
    assert len(method.monitor_.sizes_) == SMALL["epochs"]


def test_sub_head_is_chosen_by_the_lowest_training_loss(fitted):
    method, ds = fitted
    assert select_sub_head([-0.4, -2.1, -1.9]) == 1
    assert method.sub_head_ == int(np.argmin(method.sub_head_losses_))
    np.testing.assert_allclose(method.predict_proba(ds.x[:50]), method.predict_heads(ds.x[:50])[:, method.sub_head_])
    again = evaluate_sub_heads(method.model_, method.batches(ds.x, shuffle=False), max_batches=3)
    assert again.shape == (SMALL["sub_heads"],) and np.all(np.isfinite(again))


def test_collapse_detector_fires_on_a_collapsed_assignment():
    message = collapse_warning(np.bincount(np.r_[np.zeros(950, int), np.arange(50) % 43], minlength=43))
    assert message and "collapse" in message and "batch" in message and "overcluster" in message
    assert collapse_warning(np.bincount(np.arange(1000) % 43)) is None  # balanced: quiet
    assert collapse_warning(np.r_[np.full(5, 100), np.zeros(38)]) is not None  # 5 of 43 clusters used
    assert mean_entropy(np.eye(4)[[0] * 10]) == pytest.approx(0.0, abs=1e-6)
    assert mean_entropy(np.full((10, 4), 0.25)) == pytest.approx(1.0)


def test_monitor_records_a_collapsed_epoch_and_flags_it_when_it_is_the_last():
    class Collapsed:  # stands in for a model whose head B puts everything in cluster 0
        def predict(self, x, **kw):
            p = np.zeros((len(x), 2, 10), "float32")
            p[:, :, 0] = 1.0
            return p

    monitor = IICMonitor(np.zeros((30, 8, 8, 1)), y=np.arange(30) % 10)
    monitor.set_model(Collapsed())
    logs = {"loss_B0": -0.1, "loss_B1": -0.2}
    monitor.on_epoch_end(0, logs)  # progress, not an alarm: training often repairs an early collapse
    assert monitor.collapsed_ == [True] and "collapse" in monitor.final_warning()
    assert logs["largest_cluster"] == 1.0 and logs["clusters_used"] == 1 and logs["sub_head"] == 1
    assert logs["display_acc"] == pytest.approx(0.1)


def test_feature_view_batches_pair_each_image_with_its_own_copies():
    n_img, copies = 20, 3
    feats = np.zeros((1 + copies, n_img, 2), "float32")
    feats[..., 0] = np.arange(1 + copies)[:, None]  # which view
    feats[..., 1] = np.arange(n_img)[None, :]  # which image
    (orig, views), = FeatureViewBatches(feats, 8, seed=0)[1]
    assert orig.shape == (8, 2) and views.shape == (24, 2) and np.all(orig[:, 0] == 0)
    for j in range(copies):  # copy j of image i at i * copies + j, like iic_batches
        np.testing.assert_array_equal(views[j::copies, 1], orig[:, 1])
        assert np.all(views[j::copies, 0] == j + 1)
    assert len(FeatureViewBatches(feats, 8)) == 2  # the incomplete last batch is dropped


def test_hog_trunk_learns_digits_from_perturbed_copies():
    """The CPU preset's trunk: an MLP on HOG of each perturbed copy, trained on the IIC loss only."""
    runtime.seed_everything(0)
    ds, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    method = IIC(10, seed=0, trunk="hog", copies=3, view_scale=(0.75, 0.95), rotation=15.0, sub_heads=3,
                 overcluster=3, epochs=10, select_images=512, monitor_images=256)
    method.fit(ds.x)
    assert method.history_["loss"][-1] < -1.0  # I(z, z') > 1 nat (ln 10 = 2.3 at most)
    acc = metrics.hungarian_accuracy(test.y, method.predict(test.x))
    assert acc > 0.5, acc  # chance ~0.1
    assert IIC.for_profile(10, runtime.get_profile("standard")).params["trunk"] == "hog"
    with pytest.raises(ValueError, match="trunk"):
        IIC(10, trunk="vgg").uses_hog()


def test_throughput_command_times_iic_against_plain_fit(tmp_path):
    """The benchmark's `throughput` command: both speeds measured, the ratio is their quotient, JSON written."""
    import json

    from course_lib import benchmark

    out = tmp_path / "iic-throughput.json"
    r = benchmark.throughput("iic", "digits", profile="quick", images=400, steps=2, repeats=1,
                             options=dict(hidden=16, sub_heads=2, sub_heads_a=1, batch_images=64), out=out,
                             verbose=False)
    assert r["iic_img_s"] > 0 and r["plain_img_s"] > 0 and r["trunk_images_per_step"] == 64 * 5
    assert r["ratio"] == pytest.approx(r["iic_img_s"] / r["plain_img_s"], rel=1e-2)
    assert json.loads(out.read_text())["profile"] == "quick"
    with pytest.raises(ValueError, match="no throughput"):
        benchmark.throughput("pixels-kmeans", "digits", profile="quick", images=100, verbose=False)
