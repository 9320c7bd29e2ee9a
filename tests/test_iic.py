"""IIC: the loss of the training step on known input; alternation trains only the epoch's head; the CNN on
pixels (`iic`) and the MLP on HOG (`iic-hog`) learn digits above chance; the sub-head is chosen by the lowest
training loss; the collapse detector fires; a killed run resumes; notebook 04's step is the library's."""
import inspect
import json
import math
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from course_lib import data, losses, metrics, runtime, training
from course_lib.methods import get_method
from course_lib.methods.iic import (IIC, IICModel, IICMonitor, collapse_warning, evaluate_sub_heads, mean_entropy,
                                    train_heads)
from course_lib.methods.iic_hog import FeatureViewBatches, IICHog

# sklearn's digits fill their frame: crop little. A small, fast CNN; the presets' schedule and lamb.
SMALL = dict(width=16, input_size=16, crop=1.0, view_scale=(0.7, 1.0), lamb=2.0, batch_images=128, copies=3,
             sub_heads=3, overcluster=3, head_schedule="BBA", learning_rate=3e-3, epochs=8, select_images=512,
             monitor_images=256)
TINY_HOG = dict(hidden=16, sub_heads=2, overcluster=2, copies=2, batch_images=16)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def fitted():
    """IIC (the CNN on pixels) fitted on scikit-learn's real handwritten digits, labels for display only."""
    runtime.seed_everything(0)
    ds = data.load_dataset("digits", "train")
    method = IIC(ds.n_classes, seed=0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # early epochs may look collapsed
        method.fit(ds.x, validation=(ds.x[:500], ds.y[:500]))
    return method, ds


def test_registered_apart():
    assert get_method("iic") is IIC and get_method("iic-hog") is IICHog
    quick = IIC.for_profile(10, runtime.get_profile("quick"))
    assert quick.params["sub_heads"] >= 2 and quick.params["overcluster"] > 1 and quick.params["copies"] > 1
    standard = IIC.for_profile(10, runtime.get_profile("standard")).params
    assert (standard["epochs"], standard["copies"], standard["lamb"], standard["head_schedule"]) == (6, 3, 2.0, "BBA")
    hog = IICHog.for_profile(10, runtime.get_profile("quick")).params
    assert (hog["copies"], tuple(hog["view_scale"]), hog["sub_heads_a"], hog["epochs"]) == (4, (0.75, 0.95), 1, 20)
    assert "trunk" not in IIC.defaults and "heads" not in IIC.defaults  # one name, one algorithm


def test_iic_is_a_cnn_on_images_and_iic_hog_an_mlp_on_features():
    def kinds(model):
        return {type(layer).__name__ for layer in model._flatten_layers(include_self=False, recursive=True)}

    cnn = IIC(10, width=8, input_size=16).build((28, 28, 1))
    mlp = IICHog(10, hidden=16).build((32,))
    assert "Conv2D" in kinds(cnn.trunk) and len(cnn.trunk.input_shape) == 4  # images in
    assert "Conv2D" not in kinds(mlp.trunk) and mlp.trunk.input_shape == (None, 32)  # feature vectors in
    x = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 1), dtype=np.uint8)
    hog = IICHog(4, copies=2, batch_images=16, pca_dim=8)
    (f, f_copies), = next(iter(hog.batches(x)))
    assert tuple(f.shape) == (16, 8) and tuple(f_copies.shape) == (32, 8)  # HOG of the copies, not pixels


def test_batches_pair_each_image_with_its_copies():
    x = np.random.default_rng(0).integers(0, 255, (40, 28, 28, 1), dtype=np.uint8)
    method = IIC(10, batch_images=16, copies=3, input_size=24)
    (orig, views), = next(iter(method.batches(x)))
    assert tuple(orig.shape) == (16, 24, 24, 1) and tuple(views.shape) == (48, 24, 24, 1)
    assert IIC(43, copies=5).batch_images() * 5 >= 10 * 43  # >= ~10 pairs per cluster by default


def test_the_step_loss_on_known_input():
    """Agreeing, confident, balanced copies: P is diagonal, loss = -(2 lamb - 1) ln K; and the step's loss is
    the mean over sub-heads of `losses.iic_loss` with each original paired with every one of its copies."""
    method = IIC(10, width=8, input_size=16, sub_heads=2, overcluster=2, copies=2, batch_images=8, lamb=2.0)
    net = method.build((16, 16, 1))
    trainer = method.trainers(net, 1, (16, 16, 1))["B"]
    p = np.stack([np.eye(10, dtype="float32")[np.arange(40) % 10]] * 2, axis=1)  # N x S x K, balanced
    assert float(_np(trainer.compute_loss(y_pred=(p, p)))) == pytest.approx(-3 * math.log(10), abs=1e-4)

    x = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 1), dtype=np.uint8)
    (orig, views), = next(iter(method.batches(x)))
    y_pred = trainer((orig, views), training=False)
    p_orig = _np(net.head_b(net.trunk(orig)))
    p_views = _np(net.head_b(net.trunk(views)))
    tiled = np.repeat(p_orig, 2, axis=0)  # copies stacked image by image
    b = [float(_np(losses.iic_loss(tiled[:, s], p_views[:, s], 2.0))) for s in range(2)]
    np.testing.assert_allclose(_np(trainer.sub_head_losses(y_pred)), b, atol=1e-5)
    assert float(_np(trainer.compute_loss(y_pred=y_pred))) == pytest.approx(np.mean(b), abs=1e-5)


def test_head_a_can_have_fewer_sub_heads():
    method = IICHog(4, **{**TINY_HOG, "sub_heads": 3, "sub_heads_a": 1})
    net = method.build((8,))
    assert net.head_a.dense.kernel.shape == (16, 8) and net.head_b.dense.kernel.shape == (16, 12)
    feats = np.random.default_rng(0).standard_normal((3, 16, 8)).astype("float32")
    (pair,) = FeatureViewBatches(feats, 16, shuffle=False)[0]
    trainers = method.trainers(net, 1, (8,))
    assert len(_np(trainers["A"].sub_head_losses(trainers["A"](pair)))) == 1
    assert len(_np(trainers["B"].sub_head_losses(trainers["B"](pair)))) == 3


def test_alternation_trains_only_the_epochs_head():
    method = IICHog(4, **TINY_HOG)
    net = method.build((8,))
    trainers = method.trainers(net, 4, (8,))
    feats = np.random.default_rng(0).standard_normal((3, 64, 8)).astype("float32")

    def weights():
        return {name: [np.array(w) for w in layer.weights] for name, layer in
                (("A", net.head_a), ("B", net.head_b), ("trunk", net.trunk))}

    def changed(before, after, name):
        return any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))

    heads = []
    before = weights()
    train_heads(trainers, FeatureViewBatches(feats, 16), "BA", 1, end_of_epoch=lambda e, logs: heads.append(logs))
    after = weights()
    assert not changed(before, after, "A") and changed(before, after, "B") and changed(before, after, "trunk")
    assert heads[0]["head"] == 1.0 and "loss_B0" in heads[0] and "loss_A0" not in heads[0]
    train_heads(trainers, FeatureViewBatches(feats, 16), "BA", 2, start=1)  # epoch 1: head A's
    final = weights()
    assert changed(after, final, "A") and not changed(after, final, "B")


def test_training_lowers_the_loss_and_beats_chance_on_digits(fitted):
    method, ds = fitted
    h = method.history_
    b_epochs = [e for e, head in enumerate(h["head"]) if head == 1.0]
    assert len(b_epochs) == 6 and np.all(np.isnan(np.array(h["loss_A0"])[b_epochs]))  # head A not computed
    assert h["loss"][b_epochs[-1]] < h["loss"][b_epochs[0]] - 0.3, h["loss"]  # the views agree more and more
    assert all(k in h for k in ("entropy", "largest_cluster", "display_acc", "loss_A0", "loss_B0", "seconds"))
    test = data.load_dataset("digits", "test")
    acc = metrics.hungarian_accuracy(test.y, method.predict(test.x))
    assert acc > 0.3, acc  # chance: ~0.1
    assert len(method.monitor_.sizes_) == SMALL["epochs"]


def test_sub_head_is_chosen_by_the_lowest_training_loss(fitted):
    method, ds = fitted
    assert training.lowest_loss([-0.4, -2.1, -1.9]) == 1
    assert method.sub_head_ == int(np.argmin(method.sub_head_losses_))
    np.testing.assert_allclose(method.predict_proba(ds.x[:50]), method.predict_heads(ds.x[:50])[:, method.sub_head_])
    trainer = method.trainers(method.model_, 1, ds.x.shape[1:])["B"]
    again = evaluate_sub_heads(trainer, method.batches(ds.x, shuffle=False), max_batches=3)
    assert again.shape == (SMALL["sub_heads"],) and np.all(np.isfinite(again))


def test_collapse_detector_fires_on_a_collapsed_assignment():
    message = collapse_warning(np.bincount(np.r_[np.zeros(950, int), np.arange(50) % 43], minlength=43))
    assert message and "collapse" in message and "batch" in message and "overcluster" in message
    assert collapse_warning(np.bincount(np.arange(1000) % 43)) is None  # balanced: quiet
    assert collapse_warning(np.r_[np.full(5, 100), np.zeros(38)]) is not None  # 5 of 43 clusters used
    assert mean_entropy(np.eye(4)[[0] * 10]) == pytest.approx(0.0, abs=1e-6)
    assert mean_entropy(np.full((10, 4), 0.25)) == pytest.approx(1.0)


def test_monitor_records_a_collapsed_epoch_and_flags_it_when_it_is_the_last():
    monitor = IICMonitor(y=np.arange(30) % 10)
    collapsed = np.zeros((30, 2, 10), "float32")
    collapsed[:, :, 0] = 1.0  # head B puts everything in cluster 0
    logs = {"loss_B0": -0.1, "loss_B1": -0.2}
    monitor(0, collapsed, logs)  # progress, not an alarm: training often repairs an early collapse
    assert monitor.collapsed_ == [True] and "collapse" in monitor.final_warning()
    assert logs["largest_cluster"] == 1.0 and logs["clusters_used"] == 1 and logs["sub_head"] == 1
    assert logs["display_acc"] == pytest.approx(0.1)
    balanced = np.eye(10, dtype="float32")[np.arange(30) % 10][:, None].repeat(2, axis=1)
    monitor(1, balanced, {})  # head A's epoch: no head-B loss, the last sub-head kept
    assert monitor.final_warning() is None and monitor.collapsed_ == [True, False]


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


def test_iic_hog_learns_digits_from_perturbed_copies():
    """The CPU stand-in: an MLP on HOG of each perturbed copy, trained on the IIC loss only."""
    runtime.seed_everything(0)
    ds, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    method = IICHog(10, seed=0, copies=3, view_scale=(0.75, 0.95), rotation=15.0, sub_heads=3, overcluster=3,
                    epochs=10, select_images=512, monitor_images=256)
    method.fit(ds.x)
    assert min(method.history_["loss_B0"]) < -1.0  # I(z, z') > 1 nat (ln 10 = 2.3 at most)
    acc = metrics.hungarian_accuracy(test.y, method.predict(test.x))
    assert acc > 0.5, acc  # chance ~0.1
    assert "views (HOG of every copy)" in method.timings_


def test_a_killed_run_resumes_after_its_last_finished_epoch(tmp_path, monkeypatch):
    x = data.load_dataset("digits", "train").x[:256]
    settings = dict(TINY_HOG, epochs=3, batch_images=64, head_schedule="BBA", checkpoint_dir=str(tmp_path))
    save = training.EpochCheckpoint.save

    def killed_after_two(self, epochs_done, history):
        save(self, epochs_done, history)
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.EpochCheckpoint, "save", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        IICHog(10, seed=0, **settings).fit(x)
    saved = json.loads((Path(tmp_path) / "iic.json").read_text())["history"]
    monkeypatch.setattr(training.EpochCheckpoint, "save", save)
    resumed = IICHog(10, seed=0, **settings).fit(x)
    assert resumed.history_["epoch"] == [0.0, 1.0, 2.0] and resumed.history_["head"] == [1.0, 1.0, 0.0]
    assert resumed.history_["seconds"][:2] == saved["seconds"]  # epochs 1-2 restored, not run again


def test_notebook_04_shows_the_librarys_training_step_and_loop():
    """Notebook 04 defines the step and the loop in its own cells, for students to read and change; the
    benchmark runs the library's: they must be the same code."""
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "04_iic.ipynb").read_text())
    cells = ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "code"]
    for piece in (IICModel, train_heads):
        source = inspect.getsource(piece).strip()
        assert source in cells, f"notebook 04's {piece.__name__} differs from course_lib.methods.iic's"


@pytest.mark.parametrize("method", ["iic", "iic-hog"])
def test_throughput_command_times_iic_against_plain_fit(tmp_path, method):
    """The benchmark's `throughput` command: both speeds measured, the ratio is their quotient, JSON written."""
    from course_lib import benchmark

    out = tmp_path / "throughput.json"
    r = benchmark.throughput(method, "digits", profile="quick", images=400, steps=2, repeats=1,
                             options=dict(width=8, hidden=16, sub_heads=2, sub_heads_a=1, batch_images=64, copies=4),
                             out=out, verbose=False)
    assert r["iic_img_s"] > 0 and r["plain_img_s"] > 0 and r["trunk_images_per_step"] == 64 * 5
    assert r["ratio"] == pytest.approx(r["iic_img_s"] / r["plain_img_s"], rel=1e-2)
    assert json.loads(out.read_text())["profile"] == "quick"
    assert ("in_model_img_s" in r) == (method == "iic")  # the copies made in the step: images only
    with pytest.raises(ValueError, match="no throughput"):
        benchmark.throughput("pixels-kmeans", "digits", profile="quick", images=100, verbose=False)
