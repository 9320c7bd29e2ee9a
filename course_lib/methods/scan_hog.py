"""`scan-hog`: SCAN's mining, SCAN loss and self-labeling on HOG descriptors, a CPU stand-in, not the paper.

No pretext network is learned: the neighbours are mined in HOG (PCA-whitened, L2) space and the clustering
network is an MLP on those frozen descriptors (and on those of 4 augmented copies of each image). Its numbers
are `scan-hog`'s, never `scan`'s.
"""
from __future__ import annotations

from . import register
from .scan import SCAN


@register
class ScanHog(SCAN):
    """SCAN on frozen HOG descriptors (`pretext="hog"`)."""

    name = "scan-hog"
    presets = {
        "quick": dict(pretext="hog", scan_epochs=60, selflabel_rounds=2, selflabel_epochs=2),
        # self-labeling loops while the confident set grows (Algorithm 1); 40 rounds is only a cap
        "standard": dict(pretext="hog", views=4, scan_epochs=40, selflabel_rounds=40, selflabel_epochs=5),
        "full": dict(pretext="hog", views=4, scan_epochs=100, selflabel_rounds=40, selflabel_epochs=5),
    }
    smoke = dict(SCAN.smoke)
