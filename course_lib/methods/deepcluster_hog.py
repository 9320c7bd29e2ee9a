"""`deepcluster-hog`: DeepCluster started from HOG clusters, a CPU stand-in, not the paper's method.

The paper clusters the random network's features at epoch 0 and needs hundreds of epochs to climb from that
weak signal. Here epoch 0's pseudo-labels are KMeans clusters of HOG descriptors (seed 004's hand-crafted
features); every later epoch is the paper's loop (`deepcluster`). Its numbers are `deepcluster-hog`'s.
"""
from __future__ import annotations

import numpy as np

from . import register
from .deepcluster import DeepCluster
from .features import hog_features


@register
class DeepClusterHog(DeepCluster):
    """DeepCluster whose first pseudo-labels are HOG + KMeans clusters."""

    name = "deepcluster-hog"
    presets = {
        "quick": dict(DeepCluster.presets["quick"]),  # the same sizes as deepcluster's: only the start differs
        "standard": dict(epochs=10, epoch_images=20000),  # HOG's head start: 10 epochs of 20,000 images
        "full": dict(DeepCluster.presets["full"]),
    }
    smoke = dict(DeepCluster.smoke)

    def epoch_features(self, x, epoch: int) -> np.ndarray:
        """Epoch 0: HOG descriptors; later epochs: the convnet's features."""
        return hog_features(np.asarray(x)) if epoch == 0 else super().epoch_features(x, epoch)
