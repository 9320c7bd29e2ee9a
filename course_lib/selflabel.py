"""SCAN's last step, self-labeling (Algorithm 1, lines 9-12; the official repository's selflabel.py).

    while Len(Y) increases:
        Y <- the samples whose prediction is confident (max probability >= threshold)
        train the network with cross-entropy on Y's pseudo-labels (strongly augmented inputs, class-balanced)

One implementation for every network that outputs cluster probabilities: SCAN's own network (fine-tuned), an
MLP on frozen features (`scan-hog`), or a fresh CNN on the pixels (`cnn_student`, `fresh=True`) that distils
any clustering into a classifier of images. No labels are involved anywhere.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from . import models, pretext, training


@dataclass
class SelfLabelResult:
    probs: np.ndarray | None  # the final probabilities on the inputs; None when no round was kept
    confident: list = field(default_factory=list)  # confident samples before round 1, then after each round
    rounds_kept: int = 0
    stop: str | None = None  # why the loop ended before its last round
    warning: str | None = None  # too few confident samples to train on
    seconds: float = 0.0


def cluster_floor(probs: np.ndarray, labels: np.ndarray, confident: np.ndarray) -> np.ndarray:
    """Every cluster's most confident members up to a quarter of an average confident cluster: at 0.99 a few
    clusters may have no confident sample at all, and cross-entropy would then train them away."""
    k = probs.shape[1]
    floor = math.ceil(0.25 * confident.sum() / k)
    extra = np.zeros(len(labels), bool)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if 0 < confident[members].sum() < floor or (len(members) and not confident[members].any()):
            extra[members[np.argsort(-probs[members, c])[:floor]]] = True
    return extra


def reliable(labels: np.ndarray, neighbours: np.ndarray, min_agreement: float = 0.8) -> np.ndarray:
    """SPICE's reliable samples (Niu et al. 2022, "reliable pseudo-labelling"): those whose mined neighbours
    (N x k indices) mostly share their cluster, at least `min_agreement` of them. A label-free alternative to
    the confidence threshold: a sample can be confidently wrong, but rarely together with its neighbours."""
    labels = np.asarray(labels)
    return (labels[np.asarray(neighbours)] == labels[:, None]).mean(1) >= min_agreement


def class_weights(labels: np.ndarray, n_classes: int) -> dict:
    """Keras class_weight that gives every pseudo-class the same total weight (0 for an absent class)."""
    freq = np.bincount(labels, minlength=n_classes).astype(float)
    return {c: len(labels) / (n_classes * f) if f else 0.0 for c, f in enumerate(freq)}


def train_round(model, inputs, labels, *, epochs: int, min_steps: int, batch_size: int, augmenter=None,
                seed: int = 0) -> int:
    """One self-labeling round: cross-entropy on (inputs, pseudo-labels), class-balanced, for at least
    `min_steps` steps. Strong augmentation in the tf.data pipeline on a CPU; on an accelerator the model
    carries the augmenter (`training.augment_in_model`). Returns the epochs run."""
    epochs = max(epochs, math.ceil(min_steps / math.ceil(len(inputs) / batch_size)))
    weights = class_weights(labels, model.output_shape[-1])
    if augmenter is not None:
        data = training.augmented_batches(inputs.astype("float32"), labels, batch_size, augmenter, seed=seed)
        model.fit(data, epochs=epochs, class_weight=weights, verbose=0, shuffle=False,
                  callbacks=[training.NaNGuard()])
    else:
        model.fit(inputs, labels, batch_size=batch_size, epochs=epochs, class_weight=weights, verbose=0,
                  shuffle=True, callbacks=[training.NaNGuard()])
    return epochs


def self_label(model, inputs, probs, *, threshold: float = 0.99, rounds: int = 5, epochs: int = 2,
               min_steps: int = 200, batch_size: int = 256, augmenter=None, fresh: bool = False, start=None,
               seed: int = 0, verbose: int = 0) -> SelfLabelResult:
    """Train `model` (compiled, inputs -> K softmax probabilities) on its confident pseudo-labels while the
    confident set grows. `probs`: the clustering to start from (N x K). A round after which no more samples
    are confident than before is undone and ends the loop. `fresh=True`: the model starts untrained (a
    student), so round 0 is always kept; it ends the loop when the student is then confident on fewer samples
    than its teacher was. `start`: a boolean mask of the samples round 0 trains on instead of the confident
    ones (e.g. `reliable`); later rounds select by confidence."""
    t0 = time.perf_counter()
    k = probs.shape[1]
    res = SelfLabelResult(None, [int((probs.max(1) >= threshold).sum())])
    for rnd in range(rounds):
        confident = probs.max(1) >= threshold if start is None or rnd else np.asarray(start, bool).copy()
        if confident.sum() < max(k, batch_size // 4):
            chosen = "are selected by `start`" if start is not None and rnd == 0 else f"have confidence >= {threshold}"
            res.warning = (f"self-labeling {'skipped' if rnd == 0 else 'stopped'}: only {int(confident.sum())} "
                           f"of {len(probs)} samples {chosen}; lower `threshold` (e.g. 0.9) "
                           "or train the clustering step longer")
            warnings.warn(res.warning, stacklevel=2)
            break
        labels = probs.argmax(1)
        confident |= cluster_floor(probs, labels, confident)
        before = model.get_weights()
        ran = train_round(model, inputs[confident], labels[confident], epochs=epochs, min_steps=min_steps,
                          batch_size=batch_size, augmenter=augmenter, seed=seed + rnd)
        new = np.asarray(model.predict(inputs, batch_size=1024, verbose=0), np.float32)
        res.confident.append(int((new.max(1) >= threshold).sum()))
        if verbose:
            print(f"self-label round {rnd}: trained on {int(confident.sum())} for {ran} epochs, "
                  f"now {res.confident[-1]} confident", flush=True)
        if res.confident[-1] <= res.confident[-2] and not (fresh and rnd == 0):
            model.set_weights(before)  # Algorithm 1 loops while Len(Y) increases: this round is undone
            res.stop = f"round {rnd}: the confident set did not grow ({res.confident[-2]} -> {res.confident[-1]})"
            break
        probs, res.probs, res.rounds_kept = new, new, rnd + 1
        if fresh and rnd == 0 and res.confident[-1] <= res.confident[-2]:
            # a fresh student is kept after its first round (it learned the teacher's labels), but training it
            # on its own smaller confident set would shrink what it learns from: Len(Y) did not increase
            res.stop = (f"round 0: the student is confident on fewer samples than its teacher "
                        f"({res.confident[-2]} -> {res.confident[-1]}): it keeps the teacher's round")
            break
    res.seconds = time.perf_counter() - t0
    return res


def cnn_student(input_shape, n_classes: int, width: int = 32, augmenter=None,
                learning_rate: float = 1e-3) -> keras.Model:
    """A fresh small CNN classifier (softmax, float32 output) to distil a clustering into, on the pixels.
    `augmenter` (no flips: signs 33/34 and 19/20 are mirror images) runs in the model on an accelerator; on
    a CPU pass it to `self_label` as well, which augments in the input pipeline there."""
    backbone = models.small_cnn_backbone(input_shape, width=width)
    model = training.augment_in_model(models.classifier(backbone, n_classes, dropout=0.3, name="cnn_student"),
                                      augmenter)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    return model


def student_parts(student: keras.Model) -> tuple:
    """(backbone, softmax layer) of a `cnn_student` (with or without the augmenter in front)."""
    clf = next((l for l in student.layers if isinstance(l, keras.Model) and l.name == student.name), student)
    return clf.layers[1], clf.layers[-1]  # classifier(): input -> backbone -> dropout -> softmax


def student_embedding(student: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The L2-normalised features a `cnn_student` computes before its softmax (N x d): what it learned from the
    pixels (colour, the pictogram inside the rim), to mine neighbours in (`SCAN(refine=1)`)."""
    feats = pretext.embed(student_parts(student)[0], x, batch_size)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
