import json

import keras
import numpy as np

from course_lib import training


def test_lowest_loss_picks_the_smallest_finite_loss():
    assert training.lowest_loss([0.5, 0.2, 0.9]) == 1
    assert training.lowest_loss([np.nan, 0.7, 0.3, np.inf]) == 2
    assert training.lowest_loss([np.nan, np.nan]) == 0


def test_epoch_checkpoint_saves_and_restores(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    ckpt = training.EpochCheckpoint(model, tmp_path / "run" / "ckpt")
    assert ckpt.restore({}) == 0
    ckpt.save(4, {"loss": [1.0, 0.5]})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["ckpt.json", "ckpt.weights.h5"]
    saved = [w.copy() for w in model.get_weights()]
    model.set_weights([np.zeros_like(w) for w in saved])
    history = {}
    assert ckpt.restore(history) == 4 and history == {"loss": [1.0, 0.5]}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved))
    assert json.loads((tmp_path / "run" / "ckpt.json").read_text())["epochs_done"] == 4
