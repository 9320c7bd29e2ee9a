"""The clustering and self-supervised losses, in keras.ops (TensorFlow, JAX and PyTorch backends).

- `iic_loss`: Invariant Information Clustering (Ji et al. 2019), minus the mutual information I(z, z').
- `scan_loss`: SCAN's clustering loss (Van Gansbeke et al. 2020): neighbours agree + entropy of the mean.
- `nt_xent_loss`: SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020).

Every loss computes in float32 whatever the precision policy (under `mixed_float16` a network's outputs are
float16, where 1e-8 is 0 and 65,504 is the largest number), and on several replicas each one is the loss of
the whole global batch (`distribute.all_sum` / `all_gather`): the training step scales it by 1 / replicas.
"""
from __future__ import annotations

import math

from keras import ops

from .distribute import all_gather, all_sum, offset

EPS = 1e-8


def joint_distribution(p1, p2):
    """P (C x C): the batch-averaged outer product of two views' cluster probabilities (N x C), symmetrised.
    With leading axes (..., N, C), one P per leading index (e.g. per sub-head). Summed over all replicas."""
    p1, p2 = ops.cast(p1, "float32"), ops.cast(p2, "float32")
    p = all_sum(ops.matmul(ops.swapaxes(p1, -1, -2), p2))  # sum_i p1_i p2_i^T over the global batch
    p = (p + ops.swapaxes(p, -1, -2)) / 2.0
    return p / ops.sum(p, axis=(-2, -1), keepdims=True)


def iic_loss(p1, p2, lamb: float = 1.0, eps: float = EPS):
    """-I(z, z') for cluster probabilities p1, p2 (N x C) of two views of the same N images.

    Exactly the paper's objective: P = sym(p1^T p2)/sum, clamped at eps,
    loss = -sum_ij P_ij (log P_ij - lamb log P_i - lamb log P_j). lamb > 1 rewards balanced clusters more.
    Perfectly dependent, balanced views give -log C; independent views give 0.
    Inputs (..., N, C) give one loss per leading index: S sub-heads in one batched product, S x N x C -> S.
    """
    p = joint_distribution(p1, p2)
    p = ops.maximum(p, eps)
    pi = ops.sum(p, axis=-1, keepdims=True)
    pj = ops.sum(p, axis=-2, keepdims=True)
    return -ops.sum(p * (ops.log(p) - lamb * ops.log(pi) - lamb * ops.log(pj)), axis=(-2, -1))


def entropy(p, axis=-1):
    """Shannon entropy (nats) of probabilities along axis."""
    p = ops.cast(p, "float32")
    return -ops.sum(p * ops.log(ops.maximum(p, EPS)), axis=axis)


def global_mean(x, axis=0):
    """The mean of x along `axis` over the global batch (every replica's rows)."""
    total = all_sum(ops.sum(x, axis=axis))
    return total / all_sum(ops.cast(ops.shape(x)[axis], "float32"))


def scan_loss(anchor_probs, neighbour_probs, entropy_weight: float = 5.0):
    """SCAN: -mean log <p(x), p(n)> - entropy_weight * H(mean_x p(x)).

    Returns (total, consistency, entropy). The entropy term keeps clusters from collapsing: its maximum is
    log C, so with many clusters (43) its weight must stay large enough against the consistency term.
    """
    anchor_probs, neighbour_probs = ops.cast(anchor_probs, "float32"), ops.cast(neighbour_probs, "float32")
    dot = ops.sum(anchor_probs * neighbour_probs, axis=-1)
    consistency = global_mean(-ops.log(ops.maximum(dot, EPS)))
    ent = entropy(global_mean(anchor_probs))
    return consistency - entropy_weight * ent, consistency, ent


def nt_xent_loss(z1, z2, temperature: float = 0.1):
    """SimCLR's NT-Xent for a batch of N pairs (z1[i], z2[i]): each view must pick its partner among the
    other 2N - 1 views by cosine similarity / temperature. On several replicas the negatives are the views of
    the whole global batch."""
    z1, z2 = ops.cast(z1, "float32"), ops.cast(z2, "float32")
    n = ops.shape(z1)[0]
    start = offset(n)  # where this replica's pairs sit in the global batch
    z = ops.concatenate([z1, z2], axis=0)
    z = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), EPS)
    others = ops.concatenate([all_gather(z[:n]), all_gather(z[n:])], axis=0)  # 2N_global views
    n_all = ops.shape(others)[0] // 2
    logits = ops.matmul(z, ops.transpose(others)) / temperature
    idx = ops.arange(n) + start  # this replica's pairs' global indices
    own = ops.concatenate([idx, idx + n_all], axis=0)  # each view's own column
    partner = ops.concatenate([idx + n_all, idx], axis=0)
    logits = logits - 1e9 * ops.one_hot(own, 2 * n_all, dtype="float32")  # a view is not its own partner
    ce = ops.sparse_categorical_crossentropy(partner, logits, from_logits=True)
    return global_mean(ce)


def max_mutual_information(n_clusters: int) -> float:
    """log C: the largest possible I(z, z') for C clusters (reached by balanced, perfectly agreeing views)."""
    return math.log(n_clusters)
