"""Several devices: one training step on every replica, and the losses that must see the whole batch.

Kaggle's two T4s (or a CPU split into two logical devices, as CI emulates them) train with a
`tf.distribute.MirroredStrategy`: every replica runs the training step on its share of the global batch and
the gradients are summed. Keras scales its compiled losses by 1 / replicas for that sum; the kit's own
`compute_loss` methods do the same through `per_replica`. Three losses are not averages over samples and
would change meaning on half a batch: IIC's joint distribution P, SCAN's entropy of the mean prediction and
NT-Xent's negatives. They gather what they need from every replica (`all_sum`, `all_gather`), so each
replica computes the loss of the *global* batch; scaled by 1 / replicas, the summed gradients are those of
one device on the whole batch (tests/test_distribute.py checks both).

Outside a replica (no strategy, or JAX / PyTorch, where Keras' `DataParallel` already shards one global
computation) these helpers do nothing.
"""
from __future__ import annotations

from keras import ops

def _replica_context():
    """TensorFlow's replica context inside a multi-replica training step, else None."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def replicas() -> int:
    """Replicas computing the current step together (1 outside a multi-replica step)."""
    ctx = _replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def all_sum(x):
    """x summed over the replicas (differentiable: the gradient is summed back)."""
    ctx = _replica_context()
    return x if ctx is None else ctx.all_reduce("sum", x)


def all_gather(x, axis: int = 0):
    """Every replica's x, concatenated along `axis` in replica order (differentiable)."""
    ctx = _replica_context()
    return x if ctx is None else ctx.all_gather(x, axis=axis)


def offset(n):
    """Where this replica's n rows start in the gathered batch (0 outside a multi-replica step)."""
    ctx = _replica_context()
    if ctx is None:
        return 0
    sizes = ctx.all_gather(ops.reshape(ops.cast(n, "int32"), (1,)), axis=0)
    return ops.sum(sizes[:ctx.replica_id_in_sync_group])


def per_replica(loss):
    """A global-batch loss scaled for the sum of the replicas' gradients (as Keras scales compiled losses)."""
    r = replicas()
    return loss if r == 1 else loss / float(r)


def set_strategy(strategy) -> None:
    """Make `strategy` the default for every model built and trained from now on (None: one device)."""
    import tensorflow as tf

    tf.distribute.experimental_set_strategy(strategy)


def emulate_devices(n: int = 2):
    """Split the CPU into `n` logical devices and return a MirroredStrategy over them: Kaggle's two GPUs, as
    CI can run them. Must run before TensorFlow initialises its devices (first tensor or model)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise RuntimeError(
                f"cannot split the CPU into {n} devices: TensorFlow is already initialised ({e}). Emulate in a "
                "fresh process (python -m course_lib gpucheck --emulate), before any model is built") from None
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])

