import numpy as np
import pytest

from course_lib import augment


def test_augmenter_kinds():
    assert augment.augmenter(None) is None and augment.augmenter("none") is None
    assert augment.augmenter("weak", seed=1).name == "weak_augment"
    colour = augment.augmenter("strong", colour=True)
    grey = augment.augmenter("strong", colour=False)
    assert any("ColorJitter" in type(l).__name__ for l in colour.layers)
    assert not any("ColorJitter" in type(l).__name__ for l in grey.layers)
    with pytest.raises(ValueError, match="weak"):
        augment.augmenter("medium")


def test_augmenter_changes_images_in_training_only():
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("float32")
    aug = augment.augmenter("strong", colour=True, seed=0)
    assert np.allclose(aug(x, training=False), x)
    assert not np.allclose(aug(x, training=True), x)
