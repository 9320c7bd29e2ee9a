"""The GPU path's numerics, on a CPU: losses under mixed_float16 and on two replicas (Kaggle's two T4s)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from keras import ops
from keras.backend import standardize_dtype

from course_lib import losses


def _np(x):
    return float(ops.convert_to_numpy(x))


def test_losses_are_float32_and_finite_on_extreme_float16_inputs():
    """Under mixed_float16 a network's outputs are float16: 1e-9 is 0 there and 65,504 the largest number."""
    rng = np.random.default_rng(0)
    k, n = 10, 1024
    onehot = np.eye(k, dtype="float32")[np.arange(n) % k]
    tiny = np.where(onehot > 0, 1 - 9e-9, 1e-9).astype("float16")  # confident outputs: the rest underflows to 0
    for p in (onehot.astype("float16"), tiny):
        iic = losses.iic_loss(p, p)
        assert standardize_dtype(iic.dtype) == "float32"
        assert _np(iic) == pytest.approx(-np.log(k), abs=1e-3)
        total, cons, ent = losses.scan_loss(p, p, entropy_weight=5.0)
        assert _np(cons) == pytest.approx(0.0, abs=1e-3) and _np(ent) == pytest.approx(np.log(k), abs=1e-3)
    collapsed = np.zeros((n, k), "float16")
    collapsed[:, 0] = 1
    assert np.isfinite(_np(losses.iic_loss(collapsed, collapsed)))
    assert np.isfinite(_np(losses.scan_loss(collapsed, onehot.astype("float16"))[0]))
    # NT-Xent on 1,024 views (512 pairs) of float16 embeddings, large and tiny: the float32 value
    z = rng.normal(size=(512, 128)).astype("float32")
    for scale in (1.0, 300.0, 1e-3):
        z16 = (z * scale).astype("float16")
        value = losses.nt_xent_loss(z16, z16 + np.float16(0.01 * scale), 0.1)
        assert standardize_dtype(value.dtype) == "float32"
        expected = _np(losses.nt_xent_loss(z16.astype("float32"), (z16 + np.float16(0.01 * scale)).astype("float32")))
        assert np.isfinite(_np(value)) and _np(value) == pytest.approx(expected, rel=1e-4)


def test_strong_augmentation_runs_in_tf_data_under_mixed_float16():
    """RandomErasing failed in tf.data under the policy (a Range op on half): augmentation layers are float32."""
    tf = pytest.importorskip("tensorflow")
    import keras

    from course_lib import augment

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        aug = augment.strong_augmenter(colour=True, seed=0)
        x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
        out = next(iter(tf.data.Dataset.from_tensor_slices(x).batch(4).map(lambda b: aug(b, training=True))))
        assert out.dtype == tf.float32 and out.shape == (4, 32, 32, 3)
        assert np.isfinite(out.numpy()).all() and 0 <= out.numpy().min() and out.numpy().max() <= 255
    finally:
        keras.mixed_precision.set_global_policy("float32")


_TWO_REPLICAS = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    from course_lib import distribute, losses
    strategy = distribute.emulate_devices(2)
    rng = np.random.default_rng(0)
    n, k, d = 64, 7, 16
    x1 = rng.normal(size=(n, d)).astype("float32")
    x2 = (x1 + 0.3 * rng.normal(size=(n, d))).astype("float32")
    w0 = rng.normal(size=(d, k)).astype("float32")

    def losses_of(w, a, b):
        p1, p2 = tf.nn.softmax(a @ w), tf.nn.softmax(b @ w)
        return {"iic": losses.iic_loss(tf.stack([p1, p2]), tf.stack([p2, p1]), 2.0)[0],
                "scan": losses.scan_loss(p1, p2, 5.0)[0],
                "nt_xent": losses.nt_xent_loss(a @ w, b @ w, 0.5)}

    def step(w, a, b):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(w)
            values = losses_of(w, a, b)
            scaled = {name: distribute.per_replica(v) for name, v in values.items()}
        return values, {name: tape.gradient(v, w) for name, v in scaled.items()}

    one_values, one_grads = step(tf.constant(w0), tf.constant(x1), tf.constant(x2))
    with strategy.scope():
        w = tf.Variable(w0)
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x1, x2)).batch(n))
    a, b = next(iter(data))
    values, grads = strategy.run(tf.function(lambda a, b: step(w, a, b)), args=(a, b))
    out = {"replicas": strategy.num_replicas_in_sync}
    for name in one_values:
        out[name] = {"one": float(one_values[name]),
                     "two": [float(v) for v in strategy.experimental_local_results(values[name])],
                     "grad_gap": float(np.abs(sum(g.numpy() for g in strategy.experimental_local_results(grads[name]))
                                              - one_grads[name].numpy()).max()),
                     "grad_size": float(np.abs(one_grads[name].numpy()).max())}
    print("RESULT" + json.dumps(out))
""")


def test_one_and_two_replicas_give_the_same_loss_and_gradient_on_the_same_global_batch():
    """IIC's P, SCAN's entropy and NT-Xent's negatives are global: split over two replicas, each replica
    reports the loss of the whole batch, and their summed gradients (after per_replica) equal one device's."""
    pytest.importorskip("tensorflow")
    run = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, run.stderr[-3000:]
    out = json.loads(line[len("RESULT"):])
    assert out["replicas"] == 2
    for name in ("iic", "scan", "nt_xent"):
        r = out[name]
        assert r["two"] == pytest.approx([r["one"]] * 2, rel=1e-5, abs=1e-6), name
        assert r["grad_gap"] <= 1e-4 * max(1.0, r["grad_size"]), (name, r)
