"""Networks shared by the methods. Inputs are images in [0, 255]; every model rescales itself."""
from __future__ import annotations

import math

import keras
from keras import layers, ops


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
        layers.Dense(n_classes, activation="softmax", dtype="float32"),  # float32 probabilities under mixed precision
    ], name=name)


def per_image_norm(x, center: bool = True):
    """PerImageNorm's arithmetic on a batch of images (N x H x W x C: a tensor or a NumPy array)."""
    x = ops.cast(x, "float32")
    if center:
        x = x - ops.mean(x, axis=(1, 2, 3), keepdims=True)
    return x / ops.sqrt(ops.mean(ops.square(x), axis=(1, 2, 3), keepdims=True) + 1e-6)


@keras.saving.register_keras_serializable(package="course_lib")
class PerImageNorm(layers.Layer):
    """Divide each image by its root-mean-square (after removing its mean when `center`): the same sign
    in bright sun or at dusk gives the same input (HOG's contrast normalisation, image-wide)."""

    def __init__(self, center: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.center = center

    def call(self, x):
        return per_image_norm(x, self.center)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "center": self.center}


def _conv_bn_relu(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # momentum 0.9 (not 0.99): the moving statistics settle within a short CPU run
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def small_cnn_backbone(input_shape, width: int = 32, sobel=False, normalise: bool = False, pool: str = "gap",
                       name: str = "small_cnn") -> keras.Model:
    """A 4-block VGG-style CNN (~0.4 M parameters at width 32): the kit's one small CNN.

    Blocks of width w, 2w, 4w, 8w: a 3x3 conv, BatchNorm, ReLU, then 2x2 max-pool (none after the last).
    Small enough to train on a laptop CPU at 32x32. Input options:
    sobel: False (pixels / 255), True (greyscale Sobel x, y: IIC's and DeepCluster's choice for colour images)
    or "rgb" (pixels and Sobel channels, IIC's `include_rgb`). normalise: per-image contrast normalisation of
    those inputs (`PerImageNorm`). pool: "gap" (global average pooling) or "flatten" (the flattened last map,
    as the official IIC ClusterNet: keeps where things are).
    """
    if pool not in ("gap", "flatten"):
        raise ValueError(f"pool must be 'gap' or 'flatten', got {pool!r}")
    inputs = keras.Input(input_shape)
    channels = []
    if sobel is not True:  # the pixels
        pixels = layers.Rescaling(1 / 255.0)(inputs)
        channels.append(PerImageNorm(center=True)(pixels) if normalise else pixels)
    if sobel:  # the edges
        edges = SobelFilter()(inputs)
        channels.append(PerImageNorm(center=False)(edges) if normalise else edges)
    x = layers.Concatenate()(channels) if len(channels) > 1 else channels[0]
    for i, mult in enumerate((1, 2, 4, 8)):
        x = _conv_bn_relu(x, width * mult)
        if i < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x) if pool == "gap" else layers.Flatten()(x)
    return keras.Model(inputs, x, name=name)


def mlp_trunk(dim_in: int, hidden: int = 512, depth: int = 2, noise: float = 0.0, dropout: float = 0.0,
              name: str = "mlp_trunk") -> keras.Model:
    """An MLP on feature vectors (HOG, a frozen embedding): `depth` Dense -> BatchNorm -> ReLU blocks.

    noise: Gaussian noise on the input, scaled by 1/sqrt(dim_in) (L2-normalised features have elements of
    about that size); dropout: on the input. Both only act in training, standing in for image augmentation.
    """
    stack = [keras.Input((dim_in,))]
    if noise:
        stack.append(layers.GaussianNoise(noise / math.sqrt(dim_in)))
    if dropout:
        stack.append(layers.Dropout(dropout))
    for _ in range(depth):
        stack += [layers.Dense(hidden, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU()]
    return keras.Sequential(stack, name=name)


def classifier(backbone: keras.Model, n_classes: int, dropout: float = 0.3, name: str = "classifier") -> keras.Model:
    """backbone -> dropout -> softmax."""
    inputs = keras.Input(backbone.input_shape[1:])
    x = backbone(inputs)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _fire(x, fire_id: int, squeeze: int, expand: int):
    p = f"fire{fire_id}_"
    x = layers.Conv2D(squeeze, 1, activation="relu", name=p + "squeeze1x1")(x)
    left = layers.Conv2D(expand, 1, activation="relu", name=p + "expand1x1")(x)
    right = layers.Conv2D(expand, 3, padding="same", activation="relu", name=p + "expand3x3")(x)
    return layers.Concatenate(name=p + "concat")([left, right])


def squeezenet(input_shape, name: str = "squeezenet") -> keras.Model:
    """SqueezeNet v1.1 without its top, layer names as in keras-squeezenet with "/" -> "_" (Keras 3 forbids "/").

    Expects Caffe-style input (BGR, ImageNet mean subtracted: keras.applications.vgg16.preprocess_input).
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    x = _fire(x, 2, 16, 64)
    x = _fire(x, 3, 16, 64)
    x = layers.MaxPooling2D(3, 2, name="pool3")(x)
    x = _fire(x, 4, 32, 128)
    x = _fire(x, 5, 32, 128)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)
    for fire_id, s, e in ((6, 48, 192), (7, 48, 192), (8, 64, 256), (9, 64, 256)):
        x = _fire(x, fire_id, s, e)
    return keras.Model(inputs, x, name=name)


class SobelFilter(layers.Layer):
    """DeepCluster's fixed pre-layer: RGB -> greyscale (1x1 conv), then two fixed 3x3 Sobel filters (x, y).

    Removes colour (a trivial cue for clustering) and keeps edges. Not trainable. Input in [0, 255].
    """

    def __init__(self, **kwargs):
        super().__init__(trainable=False, **kwargs)

    def call(self, x):
        x = ops.cast(x, "float32") / 255.0
        if x.shape[-1] == 3:
            x = ops.sum(x * ops.convert_to_tensor([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        gx = ops.convert_to_tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        kernel = ops.stack([gx, ops.transpose(gx)], axis=-1)[:, :, None, :]  # 3 x 3 x 1 x 2
        return ops.conv(x, kernel, padding="same")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)
