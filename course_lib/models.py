"""Networks shared by the methods. Inputs are images in [0, 255]; every model rescales itself."""
from __future__ import annotations

import keras
from keras import layers


def seed_cnn(input_shape, n_classes: int, name: str = "seed_cnn") -> keras.Model:
    """Seed 000's supervised CNN: Conv 32 -> MaxPool -> BatchNorm -> Dropout -> Flatten -> Dense 1000 -> Dense.

    8.2 M parameters, almost all in the Dense 1000 layer on the flattened 16x16x32 map.
    """
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Rescaling(1 / 255.0),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.BatchNormalization(),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(1000, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ], name=name)


def _conv_bn_relu(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # momentum 0.9 (not 0.99): the moving statistics settle within a short CPU run
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def small_cnn_backbone(input_shape, width: int = 32, name: str = "small_cnn") -> keras.Model:
    """A 4-block VGG-style CNN (~0.4 M parameters at width 32) ending in global average pooling.

    Blocks of width w, 2w, 4w, 8w: a 3x3 conv, BatchNorm, ReLU, then 2x2 max-pool (none after the last).
    Small enough to train on a laptop CPU at 32x32.
    """
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0)(inputs)
    for i, mult in enumerate((1, 2, 4, 8)):
        x = _conv_bn_relu(x, width * mult)
        if i < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name=name)


def classifier(backbone: keras.Model, n_classes: int, dropout: float = 0.3, name: str = "classifier") -> keras.Model:
    """backbone -> dropout -> softmax."""
    inputs = keras.Input(backbone.input_shape[1:])
    x = backbone(inputs)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
