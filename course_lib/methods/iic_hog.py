"""`iic-hog`: a CPU stand-in for IIC, not the paper's method.

IIC's objective, heads and perturbed copies as in `iic`, but the trunk is a two-layer MLP on the PCA of the
HOG descriptor of every image and of every perturbed copy (described once, before training): minutes on a
CPU where the paper's CNN on pixels needs hours. Its numbers are `iic-hog`'s, never `iic`'s.
"""
from __future__ import annotations

from . import register
from .iic import IIC


@register
class IICHog(IIC):
    """IIC with an MLP trunk on HOG descriptors of the perturbed copies (`trunk="hog"`)."""

    name = "iic-hog"
    # 4 copies of milder perturbations; lamb=2 (lamb=1 let one cluster take 23% of GTSRB); two head-B epochs per
    # head-A epoch as the paper's MNIST configuration; one sub-head in head A (it only shapes the trunk)
    _HOG = dict(trunk="hog", copies=4, view_scale=(0.75, 0.95), rotation=15.0, lamb=2.0, head_schedule="BBA",
                sub_heads_a=1)
    presets = {"quick": dict(_HOG, epochs=20), "standard": dict(_HOG, epochs=20), "full": dict(_HOG, epochs=100)}
    smoke = dict(IIC.smoke)
