"""Profiles, seeding and device setup: the first call of every notebook and benchmark run."""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import platform
import random
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROFILE_ENV = "COURSE_PROFILE"


@dataclass(frozen=True)
class Profile:
    """How much work a run does. Every method reads its sizes from here.

    quick: a few minutes on a 2-core CPU (CI); standard: a real CPU run (<= 20-30 min a method);
    full: the papers' settings, for a GPU session.
    """

    name: str
    max_train: int | None  # images a method is fitted on (None: all)
    max_eval: int | None  # images it is scored on (None: all)
    epochs: int  # epochs of a plain training run (supervised, autoencoder)
    batch_size: int
    n_synthetic: int  # images drawn from the built-in synthetic-signs generator

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES = {
    "quick": Profile("quick", max_train=3000, max_eval=2000, epochs=3, batch_size=128, n_synthetic=3000),
    "standard": Profile("standard", max_train=None, max_eval=None, epochs=15, batch_size=128, n_synthetic=20000),
    "full": Profile("full", max_train=None, max_eval=None, epochs=60, batch_size=256, n_synthetic=60000),
}


def has_accelerator() -> bool:
    """True when the active Keras backend sees a GPU (JAX: any accelerator)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "jax":
            import jax

            return jax.devices()[0].platform != "cpu"
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))  # a TPU is not used by the kit (see `setup`)
    except Exception:  # a backend that fails to import has no accelerator for us
        return False


def get_profile(name: str | Profile | None = None) -> Profile:
    """The profile named, else $COURSE_PROFILE, else quick on a CPU and full with an accelerator."""
    if isinstance(name, Profile):
        return name
    name = name or os.environ.get(PROFILE_ENV) or ("full" if has_accelerator() else "quick")
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown profile {name!r}: choose one of {sorted(PROFILES)} "
            f"(set {PROFILE_ENV}=quick|standard|full)"
        ) from None


def device_name() -> str:
    """A short description of where the backend computes ('cpu (2 cores)', 'gpu: NVIDIA H100 ...')."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "jax":
            import jax

            d = jax.devices()[0]
            if d.platform != "cpu":  # the same 'cpu (N cores)' as the other backends otherwise
                return f"{d.platform}: {getattr(d, 'device_kind', d)}"
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"gpu: {torch.cuda.get_device_name(0)}"
        else:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"gpu: {details.get('device_name', gpus[0].name)} x{len(gpus)}"
    except Exception:
        pass
    return f"cpu ({os.cpu_count()} cores)"


def versions() -> dict:
    """Versions of the libraries a result depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("keras", "tensorflow", "jax", "torch", "numpy", "scikit-learn", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend; make TensorFlow ops deterministic where it can."""
    random.seed(seed)
    np.random.seed(seed)
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # older TF: best effort only
            pass


@dataclass
class RuntimeInfo:
    profile: Profile
    seed: int
    backend: str
    device: str
    strategy: object | None  # the tf.distribute strategy every model trains under (several devices), else None
    mixed_precision: bool
    environment: str  # colab, kaggle or local
    replicas: int = 1  # devices a training step runs on

    def summary(self) -> dict:
        return {
            "profile": self.profile.name,
            "seed": self.seed,
            "backend": self.backend,
            "device": self.device,
            "replicas": self.replicas,
            "mixed_precision": self.mixed_precision,
            "environment": self.environment,
            **versions(),
        }


# TensorFlow's C++ start-up lines: TF_CPP_MIN_LOG_LEVEL does not hide them in TF 2.21 (absl logs them before it
# reads the variable); noise to a student reading the command's output
NATIVE_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:.]+ +\d+ "
                          rb"((port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor)\.cc:|node_def_util\.cc:"
                          rb"\d+\] NodeDef mentions attribute|util\.cc:\d+\] oneDNN supports)|To enable the "
                          rb"following instructions: .* rebuild TensorFlow)")


def without_onednn() -> None:
    """Turn off TensorFlow's oneDNN kernels for an emulated mixed-precision session; call before TensorFlow loads
    (it reads TF_ENABLE_ONEDNN_OPTS once). `gpucheck --emulate` does.

    On some x86 CPUs (an Intel Xeon with AVX512-FP16 here, 2026-12-02) oneDNN computes a float16 convolution's
    weight gradient ~50x slower than TensorFlow's own kernel (11.8 s against 0.25 s for one 64-channel 3x3 layer
    on 64 images of 32x32); the emulated check then ran past CI's 25 minutes in SimCLR's first epoch. A GPU never
    runs these CPU kernels and float32 runs are not concerned. A TF_ENABLE_ONEDNN_OPTS the user set is kept."""
    if sys.modules.get("tensorflow") is not None and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        print("note: TensorFlow is already loaded, oneDNN stays on (float16 gradients may be slow on this CPU)",
              file=sys.stderr)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_native_logs() -> None:
    """Drop TensorFlow's C++ start-up lines (oneDNN, "could not find cuda drivers", CPU instructions) from this
    process's standard error; every other line, Python's tracebacks included, passes unchanged.
    COURSE_TF_LOGS=1 keeps them. For the command line (a notebook shows none of them anyway)."""
    if os.environ.get("COURSE_TF_LOGS") or not hasattr(os, "pipe"):
        return
    read_end, write_end = os.pipe()
    real, saved = os.dup(2), os.dup(2)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as lines, os.fdopen(real, "wb", buffering=0) as out:
            for line in lines:
                if not NATIVE_NOISE.match(line):
                    out.write(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def restore():  # at exit: let the last lines (a traceback) through, then give stderr back
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's write end: the pump reads to its end and stops
        thread.join(timeout=5)

    atexit.register(restore)


CHECKPOINTS_ENV = "COURSE_CHECKPOINTS"


def checkpoint_root() -> str | None:
    """The folder long runs save to by default, so that rerunning a cut-off cell continues: $COURSE_CHECKPOINTS
    (e.g. a mounted Google Drive), else `course_checkpoints` in the working directory on Colab and Kaggle, where
    sessions end by themselves; None elsewhere (pass checkpoint_dir to a method to resume there too)."""
    if os.environ.get(CHECKPOINTS_ENV):
        return os.environ[CHECKPOINTS_ENV]
    return "course_checkpoints" if environment() in ("colab", "kaggle") else None


def environment() -> str:
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.path.isdir("/kaggle/input"):
        return "kaggle"
    return "local"


def setup(seed: int = 0, profile: str | Profile | None = None, mixed_precision: bool | None = None,
          verbose: bool = True, emulate_replicas: int = 0) -> RuntimeInfo:
    """Seed everything, configure devices and print the profile, versions and devices.

    mixed_precision=None turns it on only on a GPU that runs float16 fast (compute capability >= 7: Colab's and
    Kaggle's T4; not Kaggle's P100). With several GPUs every model is built and trained under a
    MirroredStrategy (`distribute.set_strategy`): Kaggle's two T4s both train. `emulate_replicas=2` splits the
    CPU into two logical devices and turns on mixed precision: a student's GPU session, as CI runs it (call it
    in a fresh process, before any model is built).
    """
    import keras

    from . import distribute

    prof = get_profile(profile)
    backend = keras.backend.backend()
    strategy, use_mp, note = None, False, ""
    if backend == "tensorflow":
        import tensorflow as tf

        if emulate_replicas:
            strategy = distribute.emulate_devices(emulate_replicas)
            mixed_precision, note = True, f" (emulated: {emulate_replicas} logical CPU devices)"
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: harmless on a re-run of the cell
                pass
        if mixed_precision is None and gpus:
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
            mixed_precision = cc >= (7, 0)
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
        elif not gpus and environment() != "local" and os.environ.get("TPU_NAME", os.environ.get("COLAB_TPU_ADDR")):
            note = (" - a TPU runtime: the kit does not train on TPUs (its steps are tested on GPUs and CPUs only); "
                    "it runs on the host CPU. Choose a GPU runtime (Colab: T4; Kaggle: T4 x2 or P100)")
        distribute.set_strategy(strategy)
    elif emulate_replicas:
        raise ValueError("emulate_replicas needs the TensorFlow backend (tf.distribute): set KERAS_BACKEND=tensorflow")
    else:
        if mixed_precision is None:
            mixed_precision = has_accelerator()
        if backend == "jax":  # several accelerators: Keras shards each global batch over them (DataParallel)
            import jax

            if len(jax.devices()) > 1 and jax.devices()[0].platform != "cpu":
                keras.distribution.set_distribution(keras.distribution.DataParallel())
    replicas = strategy.num_replicas_in_sync if strategy is not None else _jax_replicas(backend)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    use_mp = bool(mixed_precision)
    from .training import set_augment_on_device

    set_augment_on_device(bool(emulate_replicas) or has_accelerator())  # augmentation in the step, on the device
    seed_everything(seed)
    info = RuntimeInfo(prof, seed, backend, device_name(), strategy, use_mp, environment(), replicas)
    if verbose:
        print(f"profile: {prof.name}  ({PROFILE_ENV}={os.environ.get(PROFILE_ENV, '<unset>')})  seed: {seed}")
        print(f"backend: {backend}  device: {info.device}  replicas: {replicas}{note}  mixed precision: {use_mp}  "
              f"env: {info.environment}")
        print("versions:", ", ".join(f"{k} {v}" for k, v in versions().items()))
    return info


def _jax_replicas(backend: str) -> int:
    if backend != "jax":
        return 1
    import keras

    dist = keras.distribution.distribution()
    return len(dist.device_mesh.devices.flatten()) if dist is not None else 1


@contextlib.contextmanager
def atomic_write(path):
    """Write `path` all at once: yields a temporary path in the same folder, renamed onto `path` when the
    block ends without an error (removed when it raises), so a reader never sees half a file.

    The temporary name ends like the target's ("x.weights.h5" -> "x.tmp-<pid>.weights.h5"), for writers that
    check the suffix (Keras' save_weights, np.savez).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, dot, suffix = path.name.partition(".")
    tmp = path.with_name(f"{stem}.tmp-{os.getpid()}{dot}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def data_kind(ds) -> str:
    """Which row of a notebook's PROMISE a dataset falls under: "digits", "synthetic-signs", "gtsrb" (any
    43-class source: the Kaggle / official folders or an npz copy), "mnist" (tfds or an npz named mnist*),
    else the dataset's name."""
    name = ds.name.lower()
    if name in ("digits", "synthetic-signs"):
        return name
    if ds.n_classes == 43 or name.startswith("gtsrb"):
        return "gtsrb"
    if name == "mnist" or (name.startswith("npz:") and "mnist" in name):
        return "mnist"
    return ds.name


def promised(promise: dict, profile: str, ds) -> float:
    """A notebook's promise for this profile and data: promise[(profile, kind)], else promise[("quick", kind)]
    (more data and epochs should not do worse), else 2 / n_classes (twice chance)."""
    kind = data_kind(ds)
    if (profile, kind) in promise:
        return promise[(profile, kind)]
    return promise.get(("quick", kind), 2 / ds.n_classes)
