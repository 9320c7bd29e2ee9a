import numpy as np
import pytest

from course_lib import benchmark
from course_lib.methods import features


@pytest.mark.parametrize("backbone,size,dim", [("vgg16", 32, 512), ("vgg16", 64, 512), ("vgg19", 48, 512),
                                               ("resnet50", 64, 2048), ("mobilenetv3small", 64, 576),
                                               ("squeezenet", 64, 512)])
def test_feature_shape_per_backbone_and_size(backbone, size, dim):
    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="RANDOM features"):
        f = features.extract_features(x, backbone, size, weights=None, cache=False, verbose=0)
    assert f.shape == (3, dim) and np.isfinite(f).all()


def test_cached_features_are_reused_not_recomputed(monkeypatch):
    x = np.random.default_rng(1).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    with pytest.warns(UserWarning):
        first = features.extract_features(x, "squeezenet", 48, weights=None, verbose=0)

    def no_build(*a, **k):
        raise AssertionError("features were recomputed instead of read from the cache")

    monkeypatch.setattr(features, "build_backbone", no_build)
    np.testing.assert_array_equal(features.extract_features(x, "squeezenet", 48, weights=None, verbose=0), first)
    with pytest.raises(AssertionError, match="recomputed"):  # other images: a new extraction
        features.extract_features(x[::-1].copy(), "squeezenet", 48, weights=None, verbose=0)


def test_real_squeezenet_weights_load_by_name(shared_data, monkeypatch):
    monkeypatch.setenv(features.WEIGHTS_ENV, str(shared_data / "weights"))
    from course_lib.models import squeezenet

    model = squeezenet((64, 64, 3))
    path = features.resolve_weights("squeezenet", "imagenet")
    assert features.load_h5_weights_by_name(model, path) == 25  # conv1 + 8 fire modules x 3 convs
    before = model.get_layer("conv1").get_weights()[0].copy()
    assert np.abs(before).mean() > 0 and before.shape == (3, 3, 3, 64)


def test_missing_weights_offline_are_explained(monkeypatch, tmp_path):
    monkeypatch.setenv(features.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="COURSE_WEIGHTS_DIR"):
        features.resolve_weights("squeezenet", "imagenet")


def test_hog_kmeans_on_real_digits_beats_pixels():
    hog = benchmark.run("hog-kmeans", "digits", profile="quick", options={"border": 0}, verbose=False)
    pix = benchmark.run("pixels-kmeans", "digits", profile="quick", verbose=False)
    assert hog["acc"] > 0.6 and hog["acc"] > pix["acc"] - 0.05


def test_prepare_images_crops_the_centre_and_stretches_dark_images():
    rng = np.random.default_rng(0)
    dark = rng.integers(10, 40, (2, 32, 32, 3)).astype(np.uint8)  # a nearly black frame, as many GTSRB ones
    out = features.prepare_images(dark, centre_crop=0.75, autocontrast=True)
    assert out.shape == (2, 24, 24, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(features.prepare_images(dark), dark)  # defaults: untouched
    with pytest.raises(ValueError, match="centre_crop"):
        features.prepare_images(dark, centre_crop=0)


def test_hue_histograms_see_the_colour_not_the_lighting():
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 200
    blue = np.roll(red, 2, axis=-1)  # (0, 0, 200)
    grey = np.full_like(red, 128)
    h = features.hue_histograms(np.concatenate([red, blue, grey, red // 2]), bins=6)
    assert h[0].argmax() == 0 and h[1].argmax() == 4  # hue 0 and 240 degrees of 360, 6 bins
    assert h[2].sum() == 0  # grey has no saturation: no colour
    assert h[3].argmax() == 0 and 0 < h[3].sum() < h[0].sum()  # darker red: the same hue, less weight


def test_hog_with_hue_bins_appends_them_scaled_to_the_hog():
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    plain = features.hog_features(x)
    both = features.hog_features(x, hue_bins=8, colour_weight=0.5)
    assert both.shape[1] == plain.shape[1] + 8
    np.testing.assert_allclose(both[:, :plain.shape[1]], plain)
    np.testing.assert_allclose(np.linalg.norm(both[:, plain.shape[1]:], axis=1),
                               0.5 * np.linalg.norm(plain, axis=1), rtol=1e-5)
