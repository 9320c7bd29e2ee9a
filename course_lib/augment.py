"""Augmentations as Keras preprocessing layers (they run inside models, on every backend).

No horizontal flips by default: traffic-sign classes come in mirror pairs (33/34 turn right/left,
36/37, 38/39), so a flip changes the label.
"""
from __future__ import annotations

import keras
from keras import layers

# Augmentation computes in float32 whatever the precision policy: under mixed_float16 RandomErasing fails inside
# tf.data (a Range op on half) and float16 rounds pixel values above 1,024 to steps of 1. Every pipeline layer
# is made with dtype=F32.
F32 = "float32"


def jit_ready(augmenter: keras.Sequential) -> keras.Sequential:
    """`augmenter`, compiled with the training step on the JAX backend.

    Keras marks its geometric layers (RandomTranslation, RandomRotation, RandomZoom) as not XLA-compatible:
    TensorFlow's XLA has no kernel for their ImageProjectiveTransformV3 op, so `compile(jit_compile="auto")`
    leaves any model holding one uncompiled. On TensorFlow that is still a graph; on JAX it means every training
    step runs op by op: the supervised CNN trained at 111 images/s on an H200 (2026-12-04, results/gpu/). On
    JAX these layers are jax.numpy (map_coordinates) and compile, so there they say so."""
    if keras.backend.backend() == "jax":
        for layer in augmenter.layers:
            layer.supports_jit = True
    return augmenter


def weak_augmenter(flips: bool = False, seed: int = 0, name: str = "weak_augment") -> keras.Sequential:
    """Small shifts, rotations and zooms: label-preserving for signs and digits."""
    ops = [
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed, dtype=F32),
        layers.RandomRotation(0.04, fill_mode="nearest", seed=seed + 1, dtype=F32),
        layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2, dtype=F32),
    ]
    if flips:
        ops.insert(0, layers.RandomFlip("horizontal", seed=seed + 3, dtype=F32))
    return jit_ready(keras.Sequential(ops, name=name))


def strong_augmenter(flips: bool = False, colour: bool = True, seed: int = 0, blur: float = 0.0,
                     name: str = "strong_augment") -> keras.Sequential:
    """Crops, rotations, colour changes and cutout: the 'strong' views of SimCLR / SCAN self-labeling.

    Works on images in [0, 255]. colour=False for greyscale data. blur: the share of images blurred by a
    Gaussian (5x5 kernel, sigma 0.5-1 pixel, one sigma a batch), as SimCLR's views and SCAN's RandAugment
    (its Sharpness op) change sharpness: a far, blurred frame of a sign and a near, sharp one then look alike.
    """
    ops = [
        layers.RandomZoom((-0.35, 0.1), fill_mode="nearest", seed=seed, dtype=F32),
        layers.RandomTranslation(0.12, 0.12, fill_mode="nearest", seed=seed + 1, dtype=F32),
        layers.RandomRotation(0.06, fill_mode="nearest", seed=seed + 2, dtype=F32),
    ]
    if blur:  # factor (p, p): each image blurred with probability p
        ops.append(layers.RandomGaussianBlur(factor=(blur, blur), kernel_size=5, sigma=(0.5, 1.0),
                                             value_range=(0, 255), seed=seed + 7, dtype=F32))
    if colour:
        ops += [
            layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.4, contrast_factor=0.4,
                                     saturation_factor=(0.3, 0.8), hue_factor=0.05, seed=seed + 3, dtype=F32),
            layers.RandomGrayscale(0.2, seed=seed + 4, dtype=F32),
        ]
    else:
        ops += [layers.RandomBrightness(0.3, value_range=(0, 255), seed=seed + 3, dtype=F32),
                layers.RandomContrast(0.4, value_range=(0, 255), seed=seed + 4, dtype=F32)]
    ops.append(layers.RandomErasing(factor=0.5, scale=(0.02, 0.15), value_range=(0, 255), seed=seed + 5, dtype=F32))
    if flips:
        ops.insert(0, layers.RandomFlip("horizontal", seed=seed + 6, dtype=F32))
    return jit_ready(keras.Sequential(ops, name=name))


def augmenter(kind: str | None, colour: bool = True, seed: int = 0):
    """The augmenter a method's `augment` option names: None or "none" (no augmenter), "weak" or "strong".

    colour: whether the images have 3 channels (the strong augmenter then jitters colours). No flips.
    """
    if kind is None or kind == "none":
        return None
    if kind == "weak":
        return weak_augmenter(seed=seed)
    if kind == "strong":
        return strong_augmenter(colour=colour, seed=seed)
    raise ValueError(f"augment must be None, 'none', 'weak' or 'strong', got {kind!r}")
