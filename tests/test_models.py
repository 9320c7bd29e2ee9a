import keras
import numpy as np
import pytest

from course_lib import models


def test_per_image_norm_gives_zero_mean_and_unit_rms_per_image():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32") * np.array([1, 10, 100], "float32")[:, None, None, None]
    z = np.asarray(models.PerImageNorm()(x))
    assert np.allclose(z.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert np.allclose(np.sqrt((z ** 2).mean(axis=(1, 2, 3))), 1, atol=1e-3)
    # the same image at another contrast gives the same input
    assert np.allclose(z[0], np.asarray(models.PerImageNorm()(x[:1] * 7 + 3))[0], atol=1e-4)
    u = np.asarray(models.PerImageNorm(center=False)(x))  # no centring: the sign of every pixel stays
    assert np.allclose(np.sqrt((u ** 2).mean(axis=(1, 2, 3))), 1, atol=1e-3) and (u >= 0).all()


def test_per_image_norm_round_trips_through_a_saved_model(tmp_path):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, models.PerImageNorm(center=False)(inputs))
    model.save(tmp_path / "m.keras")
    layer = keras.models.load_model(tmp_path / "m.keras").layers[-1]
    assert isinstance(layer, models.PerImageNorm) and layer.center is False


def test_small_cnn_backbone_default_is_four_conv_blocks_and_global_pooling():
    net = models.small_cnn_backbone((32, 32, 3), width=8)
    convs = [l for l in net.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 16, 32, 64]
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in net.layers) == 4
    assert isinstance(net.layers[-1], keras.layers.GlobalAveragePooling2D) and net.output_shape == (None, 64)
    assert not any(isinstance(l, (models.SobelFilter, models.PerImageNorm)) for l in net.layers)


@pytest.mark.parametrize("sobel, channels_in, norms", [(True, 2, 1), ("rgb", 5, 2), (False, 3, 1)])
def test_small_cnn_backbone_input_options(sobel, channels_in, norms):
    net = models.small_cnn_backbone((16, 16, 3), width=4, sobel=sobel, normalise=True, pool="flatten")
    first = next(l for l in net.layers if isinstance(l, keras.layers.Conv2D))
    assert first.kernel.shape[2] == channels_in
    assert sum(isinstance(l, models.PerImageNorm) for l in net.layers) == norms
    assert net.output_shape == (None, 2 * 2 * 32)  # flattened 2 x 2 x 8w map
    out = net.predict(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8"), verbose=0)
    assert np.isfinite(out).all()


def test_mlp_trunk_depth_noise_and_dropout():
    deep = models.mlp_trunk(20, hidden=16, depth=2)
    assert [l.units for l in deep.layers if isinstance(l, keras.layers.Dense)] == [16, 16]
    shallow = models.mlp_trunk(20, hidden=16, depth=1, noise=0.2, dropout=0.1)
    noise = next(l for l in shallow.layers if isinstance(l, keras.layers.GaussianNoise))
    assert np.isclose(noise.stddev, 0.2 / np.sqrt(20))
    assert any(isinstance(l, keras.layers.Dropout) for l in shallow.layers)
    f = np.random.default_rng(0).normal(size=(4, 20)).astype("float32")
    assert np.allclose(shallow(f, training=False), shallow(f, training=False))  # noise only in training
    assert not np.allclose(shallow(f, training=True), shallow(f, training=False))
