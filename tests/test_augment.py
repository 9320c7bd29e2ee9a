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


def _compiles(augmenter) -> bool:
    """Whether compile(jit_compile="auto") may compile the training step of a model holding `augmenter`: every
    layer says it supports jit (the layers' half of Keras' `model_supports_jit`; its other half, TensorFlow's op
    determinism, depends on what ran before in the process)."""
    import keras

    from course_lib import training

    inputs = keras.Input((32, 32, 3))
    net = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model = keras.Model(inputs, net(training.TrainingOnly(augmenter)(inputs)))
    return all(layer.supports_jit for layer in model._flatten_layers())


def test_augmenters_compile_with_the_training_step_on_jax_only(monkeypatch):
    """On an H200 with KERAS_BACKEND=jax (2026-12-04) the supervised CNN trained at 111 images/s: Keras' geometric
    layers say they cannot be compiled (true of TensorFlow's XLA only), so JAX ran every step op by op. On JAX the
    kit's augmenters say they can; on TensorFlow they keep Keras' answer (no XLA for ImageProjectiveTransformV3)."""
    import keras

    from course_lib.methods.iic import iic_views

    def everything():
        original, perturbed, _ = iic_views((32, 32, 3))
        return [augment.weak_augmenter(), augment.strong_augmenter(), augment.strong_augmenter(colour=False),
                augment.strong_augmenter(blur=0.5), original, perturbed]

    assert not any(_compiles(a) for a in everything())  # TensorFlow, the default backend of the tests
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    made_for_jax = everything()
    monkeypatch.undo()
    assert all(_compiles(a) for a in made_for_jax)


def _sharpness(x):
    """Mean absolute Laplacian of the greyscale images: what a blur lowers."""
    g = np.asarray(x).mean(-1)
    return np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]).mean()


def test_strong_views_blur_images_only_when_asked():
    """issue 20: GTSRB's clusters split a class into its sharp (near) and blurred (far) frames; `blur` is the share
    of strong views blurred, so the networks see both for one sign. Off by default: the other methods' views stay."""
    checker = (np.indices((32, 32)).sum(0) % 2) * 255.0  # a 1-pixel checkerboard: all edges
    x = np.repeat(np.repeat(checker[None, :, :, None], 64, 0), 3, -1).astype("float32")
    assert not any("Blur" in type(l).__name__ for l in augment.strong_augmenter().layers)
    blurred = augment.strong_augmenter(blur=1.0, seed=0).layers
    only_blur = [l for l in blurred if "Blur" in type(l).__name__]
    assert len(only_blur) == 1
    out = np.asarray(only_blur[0](x, training=True))
    assert _sharpness(out) < 0.7 * _sharpness(x)
    assert np.allclose(only_blur[0](x, training=False), x)
