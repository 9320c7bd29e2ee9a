import keras
import numpy as np
import pytest

from course_lib import augment, data, models, pretext


def test_a_simclr_model_saves_and_loads_whole(tmp_path):
    backbone = models.small_cnn_backbone((16, 16, 1), width=4)
    model = pretext.SimCLR(backbone, proj_dim=8, hidden=16, temperature=0.3,
                           augmenter=augment.strong_augmenter(colour=False))
    x = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1)).astype("float32")
    z1, z2 = model((x, x))
    model.compile(keras.optimizers.Adam(1e-3))
    model.save(tmp_path / "simclr.keras")
    loaded = keras.models.load_model(tmp_path / "simclr.keras")
    assert isinstance(loaded, pretext.SimCLR) and loaded.temperature == 0.3 and loaded.augmenter is not None
    l1, l2 = loaded((x, x))
    np.testing.assert_allclose(np.asarray(l1), np.asarray(z1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(l2), np.asarray(z2), atol=1e-5)


def test_the_simclr_loss_falls_on_digits():
    x = data.load_dataset("digits", "train", max_images=256).x
    _, hist = pretext.train_simclr(x, 3, batch_size=64, width=8, temperature=0.5)
    assert hist["loss"][-1] < hist["loss"][0]


@pytest.mark.parametrize("train", [pretext.train_simclr, pretext.train_rotnet])
def test_a_cut_off_pretext_continues_after_its_last_finished_epoch(train, tmp_path):
    """A Colab disconnect during the 200 pretext epochs: rerunning continues, it does not start over."""
    x = data.load_dataset("digits", "train", max_images=128).x
    kw = dict(batch_size=64, width=8, learning_rate=1e-3, seed=0, checkpoint=tmp_path / "pretext-partial")
    if train is pretext.train_simclr:
        kw.update(temperature=0.5, colour=False)
    _, first = train(x, 1, **kw)  # "killed" after epoch 1 of 2
    backbone, resumed = train(x, 2, **kw)
    assert resumed["loss"][0] == first["loss"][0] and len(resumed["loss"]) == 2  # epoch 1 read back, epoch 2 run
    assert (tmp_path / "pretext-partial.weights.h5").is_file()
    _, done = train(x, 2, **kw)  # nothing left to run
    assert done["loss"] == resumed["loss"]
