"""`iic-hog`: a CPU stand-in for IIC, not the paper's method.

IIC's objective, heads, sub-heads, perturbed copies and epoch loop as in `iic` (`IICModel`, `train_heads`),
but the trunk is a two-layer MLP on the PCA of the HOG descriptor of every image and of every perturbed copy,
described once before training: minutes on a CPU where the paper's CNN on pixels needs hours. The copies are
perturbed as images (each copy's HOG is computed from the perturbed image); the network never sees pixels.
Its numbers are `iic-hog`'s, never `iic`'s.
"""
from __future__ import annotations

import time

import numpy as np
from keras import layers

from .. import training
from ..clustering import FeaturePipeline
from ..models import mlp_trunk
from . import register
from .iic import IIC, iic_views


class FeatureViewBatches(training.IndexBatches):
    """((f, f'),) batches from view features `feats` ((1 + copies) x N x d): f = the features of `n` unperturbed
    images, f' = those of their `copies` perturbed copies, stacked image by image as in `iic_batches`.
    Reshuffled every epoch; the last incomplete batch is dropped. Any backend."""

    def __init__(self, feats, n: int, seed: int = 0, shuffle: bool = True):
        self.feats = feats
        super().__init__(feats.shape[1], min(n, feats.shape[1]), self._pairs, seed, shuffle, drop_remainder=True)

    def _pairs(self, idx):
        return ((self.feats[0, idx], self.feats[1:, idx].swapaxes(0, 1).reshape(-1, self.feats.shape[-1])),)


def feature_view_batches(feats, n: int, seed: int = 0, shuffle: bool = True):
    """`FeatureViewBatches`' batches, in the same order; where TensorFlow is installed as a tf.data pipeline
    that gathers them in the graph (no Python per step)."""
    batches = FeatureViewBatches(feats, n, seed, shuffle)
    tf = training.tensorflow_or_none()
    if tf is None:
        return batches
    table, dim = tf.constant(feats), feats.shape[-1]

    def pairs(idx):
        f = tf.gather(table, idx, axis=1)
        return ((f[0], tf.reshape(tf.transpose(f[1:], (1, 0, 2)), (-1, dim))),)

    ds = training.tf_index_batches(batches, tf).map(pairs, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(tf.data.AUTOTUNE)


@register
class IICHog(IIC):
    """IIC's training on an MLP over HOG descriptors of each image and of its perturbed copies."""

    name = "iic-hog"
    defaults = {**{k: v for k, v in IIC.defaults.items() if k not in ("input_size", "crop", "sobel", "normalise",
                                                                      "width", "pool")},
                "pca_dim": 128, "hidden": 512, "colour_bins": 0}  # no CNN: its input options go
    _HOG = dict(copies=4, view_scale=(0.75, 0.95), rotation=15.0, lamb=2.0, head_schedule="BBA", sub_heads_a=1)
    presets = {  # milder perturbations than the CNN's; lamb=2 keeps 43 clusters in use; head A only shapes the trunk
        "quick": dict(_HOG, epochs=20),  # an epoch on features takes seconds: the standard schedule
        "standard": dict(_HOG, epochs=20),
        "full": dict(_HOG, epochs=100),  # the same stand-in, longer (the GPU's method is `iic`)
    }
    smoke = dict(IIC.smoke)

    def trunk(self, input_shape):
        """(trunk, evaluation view): the MLP on the reduced HOG features, which need no view."""
        return mlp_trunk(input_shape[-1], self.params["hidden"], depth=2, name="iic_hog_trunk"), layers.Identity()

    def hog(self, x) -> np.ndarray:
        """HOG of the greyscale images (+ colour histograms when `colour_bins` > 0, weighted half)."""
        from .features import hog_features

        bins = self.params["colour_bins"] if x.shape[-1] == 3 else 0
        return hog_features(np.asarray(x), border=2 if x.shape[1] >= 28 else 0, colour_bins=bins, colour_weight=0.5)

    def hog_perturbation(self, input_shape):
        """The perturbation of the copies, at full size (rotation, crop/scale, shift, jitter; no flips)."""
        p = self.params
        return iic_views(input_shape, input_shape[0], 1.0, tuple(p["view_scale"]), p["rotation"], p["jitter"],
                         self.seed)[1]

    def view_features(self, x, fit: bool = False) -> np.ndarray:
        """(1 + copies) x N x pca_dim: the reduced HOG of every image (row 0) and of `copies` perturbed copies;
        the PCA + L2 pipeline is fitted on row 0 when `fit` or when there is none yet."""
        from .features import describe_views

        raw = describe_views(x, self.hog, self.hog_perturbation(x.shape[1:]), self.params["copies"])
        if fit or not hasattr(self, "pipeline_"):
            self.pipeline_ = FeaturePipeline(self.params["pca_dim"], whiten=False, l2=True, seed=self.seed).fit(raw[0])
        return np.stack([self.pipeline_.transform(f) for f in raw])

    def features(self, x) -> np.ndarray:
        return self._features_of(x, lambda x: self.pipeline_.transform(self.hog(x)))

    def batches(self, x, shuffle: bool = True, pairs: bool = False):
        feats = self._view_features if self._is_fitted_on(x) else self.view_features(x)
        return feature_view_batches(feats, self.batch_images(), self.seed, shuffle)

    def selection_batches(self, x):
        return FeatureViewBatches(self._view_features, self.batch_images(), self.seed + 1)

    def step_views(self, input_shape):
        return None  # the copies' features are computed once, before training, on any device

    def fit(self, x, y=None, validation=None):
        t0, x = time.perf_counter(), np.asarray(x)
        self._view_features = self.view_features(x, fit=True)  # describe every image and its copies once
        self._keep_fitted(x, self._view_features[0])
        self.timings_["views (HOG of every copy)"] = time.perf_counter() - t0
        return super().fit(x, y, validation)
