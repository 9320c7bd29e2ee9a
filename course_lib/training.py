"""Keras training helpers shared by the methods: resumable fit, epoch timing, a NaN guard, input pipelines
with or without TensorFlow."""
from __future__ import annotations

import itertools
import time

import keras
import numpy as np


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first NaN/inf loss with a message that says what to try."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"the loss became {loss} at batch {batch}: lower the learning rate, check the inputs are in "
                "[0, 255] without NaNs, or (for clustering losses) raise the EPS clamp / batch size")


class EpochTimer(keras.callbacks.Callback):
    """Records seconds per epoch and the epoch's index into the history (logs['seconds'], logs['epoch']): after
    a resume the history shows which epochs this call ran."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._t0
            logs["epoch"] = epoch


class IndexBatches(keras.utils.PyDataset):
    """Batches made by `make(indices)` from a shuffled order of `n` items, reshuffled every epoch: the kit's
    tf.data pipelines without TensorFlow (JAX / PyTorch-only machines), and any batch built from indices."""

    def __init__(self, n: int, batch_size: int, make, seed: int = 0, shuffle: bool = True,
                 drop_remainder: bool = False):
        super().__init__()
        self.n, self.batch_size, self.make, self.shuffle = n, batch_size, make, shuffle
        self.drop_remainder = drop_remainder
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(n) if shuffle else np.arange(n)

    def __len__(self):
        return self.n // self.batch_size if self.drop_remainder else -(-self.n // self.batch_size)

    def __getitem__(self, i):
        return self.make(self.order[i * self.batch_size:(i + 1) * self.batch_size])

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(self.n)


def tensorflow_or_none():
    """TensorFlow for the tf.data pipelines, or None where it is not installed (a JAX / PyTorch-only machine):
    then batches of the same form come from an `IndexBatches` (shuffled by NumPy, not by tf.data)."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def tf_index_batches(batches: IndexBatches, tf):
    """The index vectors of `batches` (same order, reshuffled the same way every epoch) as a tf.data pipeline:
    map an in-graph gather on it and no Python runs per training step."""
    epochs = itertools.count()

    def orders():  # called once per pass over the data
        if next(epochs):
            batches.on_epoch_end()
        yield batches.order

    ds = tf.data.Dataset.from_generator(orders, output_signature=tf.TensorSpec((batches.n,), tf.int64))
    return ds.unbatch().batch(batches.batch_size, drop_remainder=batches.drop_remainder)


def augmented_batches(x, y, batch_size: int, augmenter, seed: int = 0):
    """(augment(x), y) batches for fit. With TensorFlow a tf.data pipeline: the augmentation runs on its own
    threads beside the training step (inside the model it halved CPU throughput here)."""
    tf = tensorflow_or_none()
    if tf is None:
        return IndexBatches(len(x), batch_size, lambda idx: (keras.ops.convert_to_numpy(
            augmenter(x[idx].astype("float32"), training=True)), y[idx]), seed)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (augmenter(a, training=True), b),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_resumable(model: keras.Model, x, y=None, epochs: int = 1, batch_size: int = 128,
                  checkpoint_dir: str | None = None, verbose: int = 0, seed: int = 0, callbacks=(),
                  augmenter=None, **fit_kwargs) -> dict:
    """model.fit with a NaN guard, epoch timing, optional augmentation in the input pipeline and, when
    checkpoint_dir is set, BackupAndRestore: a run killed mid-training restarts from its last finished
    epoch. Returns the history dict."""
    cbs = [NaNGuard(), EpochTimer(), *callbacks]
    if checkpoint_dir:
        cbs.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=False))
    if augmenter is not None:
        data = augmented_batches(x, y, batch_size, augmenter, seed)
        hist = model.fit(data, epochs=epochs, callbacks=cbs, verbose=verbose, shuffle=False, **fit_kwargs)
    else:
        hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=cbs, verbose=verbose,
                         shuffle=True, **fit_kwargs)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}
