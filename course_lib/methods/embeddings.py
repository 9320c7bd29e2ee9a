"""Learned embeddings + KMeans: seed 001's autoencoder, pair classifier and dot-product embedding.

Each method trains a network without labels, embeds every image with its encoder and clusters the codes
with the same pipeline as `pixels-kmeans` (PCA, optionally whitened, L2, KMeans), so a method is worth its
training only if it beats that baseline.

- `autoencoder-kmeans`: a convolutional autoencoder (MSE); the bottleneck is the embedding.
- `pair-kmeans`: a siamese "same image or not?" classifier (seed 001's representation learning).
- `similarity-kmeans`: dot products of L2-normalised embeddings, softmax over the batch (InfoNCE / NT-Xent).

The training models are small `keras.Model` subclasses that override `compute_loss`, so `model.fit` (and
with it `training.fit_resumable`: callbacks, checkpoints, resume after a kill) trains them. The input
pipeline carries two views of each image stacked on the channel axis (`StackViews`); the model splits them.
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np
from keras import layers, ops

from .. import augment, losses, models, training
from ..augment import F32
from ..distribute import per_replica
from . import register
from ..pretext import SimCLR
from .pixels import FeatureKMeans

# the clustering half of every method here: the same options and defaults as pixels-kmeans
CLUSTER_DEFAULTS = dict(pca_dim=50, whiten=True, l2=True, algorithm="kmeans", n_init=10)


# ---------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="course_lib")
class StackViews(layers.Layer):
    """Two views of a batch stacked on the channel axis: [first(x), second(x)] (None: x unchanged).

    Used as the `augmenter` of `training.fit_resumable`, so the augmentation runs in the input pipeline
    and one tensor carries both views to the model.
    """

    def __init__(self, first=None, second=None, noise: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.first, self.second, self.noise = first, second, noise  # noise: pixel std, second view only
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        a = x if self.first is None else self.first(x, training=training)
        b = x if self.second is None else self.second(x, training=training)
        if self.noise and training:
            b = b + keras.random.normal(ops.shape(b), stddev=self.noise, seed=self.seed_generator)
            b = ops.clip(b, 0.0, 255.0)
        return ops.concatenate([a, b], axis=-1)


def split_views(x):
    """The two views of a StackViews batch."""
    c = x.shape[-1] // 2
    return x[..., :c], x[..., c:]


# ---------------------------------------------------------------- the autoencoder
def input_preprocessing(input_shape, crop: float = 1.0, standardise: bool = True, name: str = "preprocess"):
    """Images in [0, 255] -> [0, 1] -> optional centre crop (a fraction of the side) -> optional per-image
    standardisation. Shared by the encoder (its input) and the loss (the reconstruction target)."""
    h, w = input_shape[:2]
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0)(inputs)
    if crop < 1:
        x = layers.CenterCrop(max(8, round(h * crop)), max(8, round(w * crop)))(x)
    if standardise:
        x = models.PerImageNorm()(x)
    return keras.Model(inputs, x, name=name)


def _conv_bn_relu(x, filters: int, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def conv_encoder(input_shape, code_dim: int = 128, width: int = 32, bottleneck: str = "dense",
                 crop: float = 1.0, standardise: bool = True, name: str = "encoder") -> keras.Model:
    """uint8-range images -> a code vector. Three conv blocks (width w, 2w, 4w; each 3x3 conv + BN + ReLU +
    2x2 max-pool), then `bottleneck` 'dense' (flatten -> Dense(code_dim): keeps where things are) or 'gap'
    (1x1 conv to code_dim -> global average pooling: what is there, not where)."""
    pre = input_preprocessing(input_shape, crop, standardise)
    inputs = keras.Input(input_shape)
    x = pre(inputs)
    for mult in (1, 2, 4):
        x = _conv_bn_relu(x, width * mult)
        x = layers.MaxPooling2D()(x)
    if bottleneck == "dense":
        x = layers.Dense(code_dim, name="code")(layers.Flatten()(x))
    elif bottleneck == "gap":
        x = layers.GlobalAveragePooling2D()(layers.Conv2D(code_dim, 1, name="code")(x))
    else:
        raise ValueError(f"bottleneck must be 'dense' or 'gap', got {bottleneck!r}")
    return keras.Model(inputs, x, name=name)


def conv_decoder(code_dim: int, output_shape, width: int = 32, linear: bool = True,
                 name: str = "decoder") -> keras.Model:
    """A code vector -> an image of `output_shape` (the encoder's preprocessed input): Dense to a map 1/8 of
    the side, three (2x upsample + conv) blocks, a 3x3 conv to the channels (linear for standardised
    targets, sigmoid for [0, 1] pixels), resized when the side is not a multiple of 8."""
    h, w, c = output_shape
    h0, w0 = max(1, h // 8), max(1, w // 8)
    inputs = keras.Input((code_dim,))
    x = layers.Dense(h0 * w0 * width * 4, activation="relu")(inputs)
    x = layers.Reshape((h0, w0, width * 4))(x)
    for mult in (4, 2, 1):
        x = layers.UpSampling2D()(x)
        x = _conv_bn_relu(x, width * mult)
    x = layers.Conv2D(c, 3, padding="same", activation=None if linear else "sigmoid", dtype="float32")(x)
    if (h0 * 8, w0 * 8) != (h, w):
        x = layers.Resizing(h, w)(x)
    return keras.Model(inputs, x, name=name)


class TwoViewModel(keras.Model):
    """A model trained on two views of each image, stacked on the channel axis (`StackViews`): by the input
    pipeline, or by the model itself in its training step when `views` is set (on an accelerator)."""

    views = None  # a StackViews layer when the training step makes the views

    def two_views(self, x, training=False):
        if self.views is not None:
            x = self.views(x, training=training)
        return split_views(x)


class AutoencoderModel(TwoViewModel):
    """Encoder -> decoder, trained with MSE between the reconstruction of the (corrupted) second view and
    the preprocessed clean first view: a denoising autoencoder when the second view is augmented."""

    def __init__(self, encoder, decoder, preprocess, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.preprocess = encoder, decoder, preprocess

    def call(self, x, training=False):
        """(reconstruction of the corrupted view, the clean view's target)."""
        clean, corrupted = self.two_views(x, training)
        return self.decoder(self.encoder(corrupted, training=training), training=training), self.preprocess(clean)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction, target = y_pred
        error = ops.square(ops.cast(reconstruction, "float32") - ops.cast(target, "float32"))
        return per_replica(ops.mean(losses.global_mean(error)))  # the global batch's MSE


# ---------------------------------------------------------------- pair classifier and dot-product embedding
def cnn_encoder(input_shape, embedding_dim: int = 128, width: int = 32, name: str = "encoder") -> keras.Model:
    """The kit's small 4-block CNN (global average pooling) followed by a linear layer to the embedding."""
    backbone = models.small_cnn_backbone(input_shape, width)
    inputs = keras.Input(input_shape)
    x = layers.Dense(embedding_dim, name="embedding")(backbone(inputs))
    return keras.Model(inputs, x, name=name)


def pair_features(e1, e2):
    """What the pair head sees: |e1 - e2| and e1 * e2 (symmetric in the two images)."""
    return ops.concatenate([ops.abs(e1 - e2), e1 * e2], axis=-1)


class PairModel(TwoViewModel):
    """Seed 001's siamese classifier: one shared encoder; a head says whether two views show the same image.

    Positives: the two augmented views of one image. Negatives: a view paired with the other view of the
    next image in the (shuffled) batch. Binary cross-entropy on the head's logit.
    """

    def __init__(self, encoder, head, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.head = encoder, head

    def call(self, x, training=False):
        v1, v2 = self.two_views(x, training)
        e1, e2 = self.encoder(v1, training=training), self.encoder(v2, training=training)
        e2_other = ops.roll(e2, 1, axis=0)  # another image's view
        pos = self.head(pair_features(e1, e2), training=training)
        neg = self.head(pair_features(e1, e2_other), training=training)
        return ops.concatenate([pos, neg], axis=0)[:, 0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = ops.cast(y_pred, "float32")
        n = ops.shape(logits)[0] // 2
        labels = ops.concatenate([ops.ones((n,)), ops.zeros((n,))])
        return per_replica(losses.global_mean(ops.binary_crossentropy(labels, logits, from_logits=True)))


class SimilarityModel(SimCLR):
    """Seed 001's dot-product embedding, with a loss that cannot collapse.

    Seed 001 pushed dot products of two views up (and of random pairs down) with a norm regulariser: the
    loss could be lowered by shrinking or sparsifying the vectors instead of arranging them, and with
    normalised vectors and no negatives every image can map to one point (loss 0, nothing learnt).
    InfoNCE (here SimCLR's NT-Xent, `losses.nt_xent_loss`) asks each view to find its partner among all the
    batch's views by a softmax over dot products of L2-normalised vectors / temperature: the length is fixed
    (nothing to shrink) and a collapsed embedding scores the worst possible loss, log(2N - 1). The
    temperature sets how sharply near neighbours are told apart. It is `pretext.SimCLR` (the same model SCAN's
    pretext trains), fed the two views stacked on the channel axis as the other models here are.
    """

    views = None  # a StackViews layer when the training step makes the views

    def call(self, x, training=False):
        if self.views is not None:
            x = self.views(x, training=training)
        return super().call(split_views(x), training=training)


# ---------------------------------------------------------------- methods
class EmbeddingKMeans(FeatureKMeans):
    """Train a network without labels, embed with its encoder, then PCA (whitened) -> L2 -> KMeans."""

    defaults: dict = CLUSTER_DEFAULTS

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **params)
        self.timings_: dict[str, float] = {}

    def build(self, input_shape) -> tuple[keras.Model, keras.Model]:
        """(training model, encoder)."""
        raise NotImplementedError

    def views(self, input_shape) -> StackViews:
        raise NotImplementedError

    def train(self, x) -> "EmbeddingKMeans":
        """Fit the network only (no clustering): the encoder is then `encoder_`."""
        p = self.params
        x = np.asarray(x)
        self.model_, self.encoder_ = self.build(x.shape[1:])
        views = self.views(x.shape[1:])
        self.model_.views = training.on_device(views)  # on an accelerator the training step makes the views
        h, w, c = x.shape[1:]
        stacked = c if self.model_.views is not None else 2 * c
        self.model_(np.zeros((2, h, w, stacked), "float32"))  # built before fit: BackupAndRestore needs weights
        steps = p["epochs"] * math.ceil(len(x) / p["batch_size"])
        lr = keras.optimizers.schedules.CosineDecay(p["learning_rate"], decay_steps=max(1, steps))
        self.model_.compile(optimizer=keras.optimizers.Adam(lr))
        t0 = time.perf_counter()
        self.history_ = training.fit_resumable(
            self.model_, x.astype("float32"), np.zeros(len(x), "float32"), epochs=p["epochs"],
            batch_size=p["batch_size"], checkpoint_dir=self.checkpoint_folder(x), verbose=p["verbose"], seed=self.seed,
            augmenter=views)
        self.timings_["training"] = time.perf_counter() - t0
        return self

    def embed(self, x) -> np.ndarray:
        """The encoder's embedding of uint8 images (N x d float32)."""
        f = self.encoder_.predict(np.asarray(x).astype("float32"), batch_size=512, verbose=0)
        return np.asarray(f, np.float32)

    features = embed  # what FeatureKMeans clusters

    def fit(self, x, y=None):
        self.train(x)
        return super().fit(x)  # embed, PCA, KMeans, each timed in timings_


@register
class AutoencoderKMeans(EmbeddingKMeans):
    """Convolutional autoencoder (MSE) -> bottleneck codes -> PCA (whitened) -> L2 -> KMeans.

    crop / standardise preprocess the encoder's input and the reconstruction target alike (as pixels-kmeans
    does its pixels). augment ('weak' / 'strong') and noise (pixel std) corrupt the encoder's input only: a
    denoising autoencoder. On GTSRB they lowered ACC in short runs (4,000 images, 4 epochs: 0.30 / 0.29
    against 0.34 plain), as did a global-average-pooled bottleneck (0.27), so the defaults are plain.
    After fit: encoder_, decoder_, history_ (empty when a finished run was restored from checkpoint_dir).
    """

    name = "autoencoder-kmeans"
    defaults = dict(CLUSTER_DEFAULTS, code_dim=128, width=16, bottleneck="dense", crop=0.75, standardise=True,
                    augment=None, noise=0.0, epochs=12, batch_size=128, learning_rate=2e-3, checkpoint_dir=None,
                    verbose=0)
    presets = {
        "quick": dict(epochs=4),
        "standard": dict(epochs=12),
        "full": dict(epochs=40, width=32),
    }
    smoke = dict(epochs=3, batch_size=64, n_init=1)

    def build(self, input_shape):
        p = self.params
        encoder = conv_encoder(input_shape, p["code_dim"], p["width"], p["bottleneck"], p["crop"],
                               p["standardise"])
        preprocess = input_preprocessing(input_shape, p["crop"], p["standardise"], name="target")
        decoder = conv_decoder(p["code_dim"], preprocess.output_shape[1:], p["width"], linear=p["standardise"])
        self.decoder_ = decoder
        return AutoencoderModel(encoder, decoder, preprocess, name="autoencoder"), encoder

    def views(self, input_shape):
        second = augment.augmenter(self.params["augment"], input_shape[-1] == 3, self.seed)
        return StackViews(None, second, noise=self.params["noise"], seed=self.seed, name="clean_and_corrupted",
                          dtype=F32)

    def reconstruct(self, x) -> np.ndarray:
        """Reconstructions as uint8 images (standardised targets are mapped back to each image's mean/std)."""
        x = np.asarray(x).astype("float32")
        rec = self.decoder_.predict(self.encoder_.predict(x, batch_size=512, verbose=0), batch_size=512,
                                    verbose=0)
        if self.params["standardise"]:  # undo the standardisation with the stats of the cropped input
            crop = input_preprocessing(x.shape[1:], self.params["crop"], False)
            raw = keras.ops.convert_to_numpy(crop(x))
            mean, std = raw.mean((1, 2, 3), keepdims=True), raw.std((1, 2, 3), keepdims=True)
            rec = rec * (std + 1e-3) + mean
        return np.clip(np.round(rec * 255), 0, 255).astype(np.uint8)

    def cropped(self, x) -> np.ndarray:
        """The inputs as the autoencoder sees them (centre crop), uint8, for side-by-side figures."""
        crop = input_preprocessing(np.asarray(x).shape[1:], self.params["crop"], False)
        out = keras.ops.convert_to_numpy(crop(np.asarray(x).astype("float32")))
        return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


@register
class PairKMeans(EmbeddingKMeans):
    """Siamese 'same image under augmentation?' classifier (seed 001) -> encoder embedding -> KMeans.

    The head sees |e1 - e2| and e1 * e2; its score is a learnt comparison, not a distance, so nothing
    forces the embeddings of similar images to be close (seed 001's caveat) - neighbour accuracy shows
    how close they end up.
    """

    name = "pair-kmeans"
    defaults = dict(CLUSTER_DEFAULTS, embedding_dim=128, width=16, head_units=64, augment="strong", epochs=10,
                    batch_size=128, learning_rate=2e-3, checkpoint_dir=None, verbose=0)
    presets = {
        "quick": dict(epochs=3, augment="weak"),  # strong views cost as much CPU as the training steps
        "standard": dict(epochs=10),
        "full": dict(epochs=100, width=64),
    }
    smoke = dict(epochs=3, batch_size=64, n_init=1)

    def build(self, input_shape):
        p = self.params
        encoder = cnn_encoder(input_shape, p["embedding_dim"], p["width"])
        head = keras.Sequential([keras.Input((2 * p["embedding_dim"],)),
                                 layers.Dense(p["head_units"], activation="relu"),
                                 layers.Dense(1, dtype="float32")], name="pair_head")
        return PairModel(encoder, head, name="pair_classifier"), encoder

    def views(self, input_shape):
        colour = input_shape[-1] == 3
        return StackViews(augment.augmenter(self.params["augment"], colour, self.seed),
                          augment.augmenter(self.params["augment"], colour, self.seed + 100), name="two_views", dtype=F32)


@register
class SimilarityKMeans(EmbeddingKMeans):
    """Dot-product embedding trained with InfoNCE (see SimilarityModel) -> encoder embedding -> KMeans.

    InfoNCE rather than a VICReg-style variance/covariance regulariser: it is the direct fix of seed 001's
    loss (its dot products, normalised, compared against the batch's other images), has one
    hyperparameter (the temperature) and is the loss SimCLR / SCAN's pretext step use.
    """

    name = "similarity-kmeans"
    defaults = dict(CLUSTER_DEFAULTS, embedding_dim=128, width=16, temperature=0.1, projection_dim=0,
                    augment="strong", epochs=10, batch_size=256, learning_rate=2e-3, checkpoint_dir=None, verbose=0)
    presets = {
        "quick": dict(epochs=3, augment="weak"),  # strong views cost as much CPU as the training steps
        "standard": dict(epochs=10),
        "full": dict(epochs=200, width=64, batch_size=512, projection_dim=128),
    }
    smoke = dict(epochs=3, batch_size=128, n_init=1)

    def build(self, input_shape):
        p = self.params
        encoder = cnn_encoder(input_shape, p["embedding_dim"], p["width"])
        # projection_dim: SimCLR's projection head (the loss reads it, KMeans reads the embedding); 0: none
        return SimilarityModel(encoder, p["projection_dim"] or None, temperature=p["temperature"],
                               name="similarity"), encoder

    def views(self, input_shape):
        colour = input_shape[-1] == 3
        return StackViews(augment.augmenter(self.params["augment"], colour, self.seed),
                          augment.augmenter(self.params["augment"], colour, self.seed + 100), name="two_views", dtype=F32)
