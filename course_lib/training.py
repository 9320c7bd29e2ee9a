"""Keras training helpers shared by the methods: resumable fit, epoch timing, a NaN guard, input pipelines
with or without TensorFlow."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import keras
import numpy as np

from .runtime import atomic_write


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first epoch whose loss is NaN/inf, with a message that says what to try. Checked once an
    epoch: reading the loss after every batch would make the host wait for the device at every step."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"the loss became {loss} in epoch {epoch + 1}: lower the learning rate, check the inputs are in "
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


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch: the loss, seconds, images/s and the projected time left, measured from the epochs
    run so far (the first includes tracing; later ones give the steady speed):
    "epoch 2/40  loss 1.2345  12.1 s  3,240 images/s  ~7.7 min left". Reads the logs at epoch end only (no
    per-batch synchronisation with the device)."""

    def __init__(self, epochs: int, images_per_epoch: int, label: str = ""):
        super().__init__()
        self.epochs, self.images, self.label = epochs, images_per_epoch, label
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)
        print(progress_line(self.label, epoch, self.epochs, (logs or {}).get("loss"), self.seconds, self.images),
              flush=True)


def progress_line(label: str, epoch: int, epochs: int, loss, seconds: list, images: int) -> str:
    """The line `EpochProgress` prints; also used by the methods with their own epoch loops."""
    steady = seconds[1:] or seconds  # the first epoch traces the step
    per_epoch = sum(steady) / len(steady)
    loss_text = f"  loss {float(loss):.4f}" if loss is not None else ""
    return (f"{label}epoch {epoch + 1}/{epochs}{loss_text}  {seconds[-1]:.1f} s  {images / per_epoch:,.0f} images/s"
            f"  ~{(epochs - epoch - 1) * per_epoch / 60:.1f} min left")


def lowest_loss(losses) -> int:
    """The head (or sub-head) to keep: the one with the lowest training loss; NaN losses never win. No labels."""
    losses = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(losses).any():
        return 0
    return int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))


class EpochCheckpoint:
    """Resume a hand-written epoch loop: after every finished epoch, `model`'s weights and the history go to
    `<path>.weights.h5` and `<path>.json` (written atomically, the JSON last); `restore` then reads them back and
    returns the epoch to start from. The optimizer starts afresh after a restart (its moments are not saved).
    path=None: nothing is saved."""

    def __init__(self, model, path):
        self.model, self.path = model, None if path is None else Path(path)

    def restore(self, history: dict) -> int:
        if self.path is None or not self.path.with_suffix(".json").is_file():
            return 0
        state = json.loads(self.path.with_suffix(".json").read_text())
        self.model.load_weights(str(self.path.with_suffix(".weights.h5")))
        history.update(state["history"])
        return int(state["epochs_done"])

    def save(self, epochs_done: int, history: dict) -> None:
        if self.path is None:
            return
        with atomic_write(self.path.with_suffix(".weights.h5")) as tmp:
            self.model.save_weights(str(tmp))
        with atomic_write(self.path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"epochs_done": epochs_done, "history": history}))


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


# ---------------------------------------------------------------- where augmentation runs
_AUGMENT_ON_DEVICE = [False]


def set_augment_on_device(flag: bool) -> None:
    """Called by runtime.setup: True on an accelerator (and when emulating one)."""
    _AUGMENT_ON_DEVICE[0] = bool(flag)


def augment_on_device() -> bool:
    """Where the kit's augmentation layers run. On a GPU: inside the training step, on the device (Colab's two
    host cores augment ~3,000 images/s, too slow to feed a T4). On a CPU: in the input pipeline, on its own
    threads beside the training step (inside the model it halved the throughput here). Same layers, same
    algorithm; only the place changes."""
    return _AUGMENT_ON_DEVICE[0]


def in_pipeline(augmenter):
    """`augmenter` when the input pipeline augments, else None."""
    return None if augment_on_device() else augmenter


def on_device(augmenter):
    """`augmenter` when the training step augments (a model applies it to its inputs in training), else None."""
    return augmenter if augment_on_device() else None


class TrainingOnly(keras.layers.Layer):
    """Apply `layer` in training only (Keras' random layers augment whenever `training` is not False)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        self.layer.build(input_shape)

    def call(self, x, training=None):
        return self.layer(x, training=True) if training else x

    def compute_output_shape(self, input_shape):
        return input_shape


def augment_in_model(model: keras.Model, augmenter) -> keras.Model:
    """`model` with `augmenter` as its first layer when the training step augments (in training only; the
    weights are shared with `model`), else `model` itself."""
    if on_device(augmenter) is None:
        return model
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, model(TrainingOnly(augmenter, dtype="float32")(inputs)), name=model.name)


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
    """(augment(x), y) batches for fit, reshuffled every epoch; (x, y) when the training step augments
    (`in_pipeline`). With TensorFlow a tf.data pipeline: the augmentation runs on its own threads beside the
    training step."""
    augmenter = in_pipeline(augmenter)
    tf = tensorflow_or_none()
    if tf is None:
        def make(idx):
            b = x[idx].astype("float32")
            return (b if augmenter is None else keras.ops.convert_to_numpy(augmenter(b, training=True))), y[idx]

        return IndexBatches(len(x), batch_size, make, seed)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, "float32") if augmenter is None
                                                else augmenter(tf.cast(a, "float32"), training=True), b),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_resumable(model: keras.Model, x, y=None, epochs: int = 1, batch_size: int = 128,
                  checkpoint_dir: str | None = None, verbose: int = 0, seed: int = 0, callbacks=(),
                  augmenter=None, **fit_kwargs) -> dict:
    """model.fit with a NaN guard, epoch timing, `augmenter` in the input pipeline (on an accelerator the model
    carries it instead: `augment_in_model`) and, when checkpoint_dir is set, BackupAndRestore: a run killed
    mid-training restarts from its last finished epoch. Returns the history dict."""
    cbs = [NaNGuard(), EpochTimer(), *callbacks]
    if verbose == 1:  # one line per epoch with the projected time left, instead of Keras' progress bar
        cbs.append(EpochProgress(epochs, len(x), label=f"{model.name}: "))
        verbose = 0
    if checkpoint_dir:
        cbs.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=False))
    if in_pipeline(augmenter) is not None:
        data = augmented_batches(x, y, batch_size, augmenter, seed)
        hist = model.fit(data, epochs=epochs, callbacks=cbs, verbose=verbose, shuffle=False, **fit_kwargs)
    else:
        hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=cbs, verbose=verbose,
                         shuffle=True, **fit_kwargs)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}
