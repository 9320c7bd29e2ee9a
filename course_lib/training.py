"""Keras training helpers shared by the methods: resumable fit, epoch timing, a NaN guard."""
from __future__ import annotations

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
    """Records seconds per epoch into the history (logs['seconds'])."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._t0


def fit_resumable(model: keras.Model, x, y=None, epochs: int = 1, batch_size: int = 128,
                  checkpoint_dir: str | None = None, verbose: int = 0, seed: int = 0, callbacks=(),
                  **fit_kwargs) -> dict:
    """model.fit with a NaN guard, epoch timing and, when checkpoint_dir is set, BackupAndRestore:
    a run killed mid-training restarts from its last finished epoch. Returns the history dict."""
    cbs = [NaNGuard(), EpochTimer(), *callbacks]
    if checkpoint_dir:
        cbs.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=False))
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=cbs, verbose=verbose,
                     shuffle=True, **fit_kwargs)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}
