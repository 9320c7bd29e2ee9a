"""`deepcluster-hog`: DeepCluster started from HOG clusters, a CPU stand-in, not the paper's method.

The paper clusters the random network's features at epoch 0 and needs hundreds of epochs to climb from that
weak signal. Here epoch 0's pseudo-labels are KMeans clusters of HOG descriptors; every later epoch is the
paper's loop (`deepcluster`). Its numbers are `deepcluster-hog`'s, never `deepcluster`'s.
"""
from __future__ import annotations

from . import register
from .deepcluster import DeepCluster


@register
class DeepClusterHog(DeepCluster):
    """DeepCluster whose first pseudo-labels are HOG + KMeans clusters (`init="hog"`)."""

    name = "deepcluster-hog"
    presets = {
        "quick": dict(DeepCluster.presets["quick"], init="hog"),
        "standard": dict(epochs=10, epoch_images=20000, init="hog"),
        "full": dict(DeepCluster.presets["full"], init="hog"),
    }
    smoke = dict(DeepCluster.smoke)
