"""The GPU check: every method's *full* code path for a few steps, where a student's session would run it.

    python -m course_lib gpucheck --out results/gpu/check.json            # on the GPU present
    python -m course_lib gpucheck --emulate --out /tmp/check.json         # on a CPU: what CI runs

Each method runs its full preset (the same networks, input pipelines, losses and loops) at the sizes of its
`smoke` settings, on a few hundred built-in synthetic signs, under the runtime a session gets: mixed_float16 on
a recent GPU and a MirroredStrategy over the GPUs; `--emulate` reproduces that on a CPU (mixed_float16, two
logical devices). Per method it records whether the losses are finite and go down, the result's shape, the
training speed, the peak device memory where the backend reports it, and the projected minutes of the full
profile on GTSRB at that speed. `t4_minutes` projects a Colab T4 from the network's FLOPs and the host's
augmentation speed (see `t4_minutes`).
"""
from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path

import numpy as np

from . import runtime
from .data import load_dataset
from .methods import get_method

METHODS = ("supervised-cnn", "autoencoder-kmeans", "pair-kmeans", "similarity-kmeans", "iic", "deepcluster", "scan")
GTSRB_IMAGES = 39_209  # the full profile's training set
# A T4 peaks at 65 TFLOPS in float16 on its tensor cores. ResNet-50 training in mixed precision is commonly
# reported at ~250 images/s on a T4, ~6 TFLOPS of useful work; small convnets on 32x32 images keep it less busy.
# 4 TFLOPS is the planning figure (about 6% of peak); the check on a real GPU measures instead.
T4_TFLOPS = 4.0
# Host work between training phases, on two cores like a Colab session's (measured on the 2-core CPU of
# 2026-12-01): DeepCluster's PCA 4096 -> 256 (13 s) + KMeans k=215 (6 s) on 39,209 rows every epoch; the final
# KMeans (and SCAN's kNN mining) about a minute for every method.
DEEPCLUSTER_HOST_EPOCH_SECONDS = 19.0
FINAL_HOST_SECONDS = 60.0


# ---------------------------------------------------------------- what a method's full run costs
def work(name: str, p: dict, n: int, k: int = 43) -> dict:
    """Images through the network in a run of `name` with parameters `p` on n images: `train` (forward and
    backward passes), `forward` (feature passes only) and `augmented` (images augmented); `host_seconds`: the
    CPU work between training phases (KMeans, mining)."""
    return {**_images(name, p, n, k), "host_seconds": FINAL_HOST_SECONDS + (
        p["epochs"] * DEEPCLUSTER_HOST_EPOCH_SECONDS if name == "deepcluster" else 0.0)}


def _images(name: str, p: dict, n: int, k: int) -> dict:
    if name == "supervised-cnn":
        seen = p["epochs"] * round(0.8 * n)  # trained on a track-wise 80%
        return {"train": seen, "forward": 0, "augmented": seen if p["augment"] else 0}
    if name == "autoencoder-kmeans":
        seen = p["epochs"] * n
        return {"train": seen, "forward": n, "augmented": seen if p["augment"] else 0}
    if name in ("pair-kmeans", "similarity-kmeans"):
        steps = math.ceil(n / p["batch_size"])
        seen = 2 * p["epochs"] * min(n, steps * p["batch_size"])  # two views of every image
        return {"train": seen, "forward": n, "augmented": seen}
    if name == "iic":
        from .methods.iic import IIC

        b = IIC(k, **p).batch_images()
        seen = p["epochs"] * (n // b) * b * (1 + p["copies"])
        return {"train": seen, "forward": p["epochs"] * p["monitor_images"], "augmented": seen}
    if name == "deepcluster":
        per_epoch = p["epoch_images"] or round(p["reassign"] * n)
        return {"train": p["epochs"] * per_epoch, "forward": p["epochs"] * n + n,
                "augmented": p["epochs"] * per_epoch if p["augment"] not in (None, "none") else 0}
    if name == "scan":
        pretext = 2 * p["pretext_epochs"] * n
        cluster = 2 * p["scan_epochs"] * n if p["end_to_end"] else 0
        selflabel = p["selflabel_rounds"] * p["selflabel_epochs"] * n  # the whole network, on augmented images
        return {"train": pretext + cluster + selflabel, "forward": (1 + p["selflabel_rounds"]) * n,
                "augmented": pretext + cluster + selflabel}
    raise ValueError(f"no work model for {name!r}")


def network_of(name: str, est):
    """The network a method trains (for its FLOPs)."""
    return {"supervised-cnn": lambda: est.model_, "autoencoder-kmeans": lambda: est.model_,
            "pair-kmeans": lambda: est.encoder_, "similarity-kmeans": lambda: est.encoder_,
            "iic": lambda: est.model_.trunk, "deepcluster": lambda: est.features_,
            "scan": lambda: est.backbone_}[name]()


def forward_flops(model) -> int:
    """2 x the multiply-adds of the Conv2D and Dense layers of a Keras model (nested and sub-models included)
    for one image."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            total += 2 * _positions(layer) * int(np.prod(layer.kernel.shape))
    return int(total)


def _positions(layer) -> int:
    """Where a layer is applied: output pixels of a convolution, 1 for a vector."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # a layer called outside a functional graph: a vector layer
        return 1
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def t4_minutes(flops_per_image: float, w: dict, host_augment_img_s: float) -> dict:
    """Minutes on a Colab T4: the network's FLOPs (training ~3x a forward pass) at `T4_TFLOPS`, plus the host's
    work between phases. Augmentation runs in the training step on the GPU (`training.augment_on_device`):
    `t4_minutes_if_augmented_on_host` is what Colab's two cores would need to augment in the input pipeline
    instead, at the speed measured here on two cores."""
    gpu = (3 * w["train"] + w["forward"]) * flops_per_image / (T4_TFLOPS * 1e12) / 60
    host = w["augmented"] / host_augment_img_s / 60 if host_augment_img_s else 0.0
    fixed = w["host_seconds"] / 60
    return {"t4_minutes": round(gpu + fixed, 1), "t4_gpu_minutes": round(gpu, 1), "t4_host_minutes": round(fixed, 1),
            "t4_minutes_if_augmented_on_host": round(max(gpu, host) + fixed, 1) if host_augment_img_s else None}


def host_augmentation_speed(images: int = 4096, batch: int = 256) -> float:
    """Images/s of the strong augmentation in a tf.data pipeline on this machine's cores (0 without TF)."""
    from . import augment, training

    tf = training.tensorflow_or_none()
    if tf is None:
        return 0.0
    x = np.random.default_rng(0).integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    aug = augment.strong_augmenter(colour=True)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch).map(
        lambda b: aug(tf.cast(b, "float32"), training=True), num_parallel_calls=tf.data.AUTOTUNE)
    for _ in ds.take(2):  # trace
        pass
    t = time.perf_counter()
    for _ in ds:
        pass
    return images / (time.perf_counter() - t)


# ---------------------------------------------------------------- one method at smoke size
def curves_and_speed(name: str, est, n: int) -> tuple[dict, float]:
    """(loss curves of the method's training phases, images/s of its last training epoch)."""
    p = est.params
    if name == "scan":
        pre = est.log_["pretext_history"]
        per = 2 * (n // p["batch_size"]) * p["batch_size"]
        return {"pretext": pre["loss"], "scan": est.log_["scan_history"]}, per / pre["seconds"][-1]
    h = est.history_
    if name == "iic":
        heads = h.get("head", [1.0] * len(h["loss"]))
        b_epochs = [i for i, head in enumerate(heads) if head == 1.0]
        per = (n // est.batch_images()) * est.batch_images() * (1 + p["copies"])
        # the speed of the last epoch whose head had trained before: a head's first epoch compiles its step
        # (head A's first epoch is the smoke run's last: 9 s of compiling on an H200, 2026-12-04)
        steady = [i for i in range(len(heads)) if heads[i] in heads[:i]] or [len(heads) - 1]
        return {"head B": [h["loss"][i] for i in b_epochs]}, per / h["seconds"][steady[-1]]
    if name == "deepcluster":
        per = max(p["batch_size"], p["epoch_images"] or round(p["reassign"] * n))
        train_s = h["seconds"][-1] - h["seconds_features"][-1] - h["seconds_kmeans"][-1]
        return {"loss": h["loss"]}, per / train_s
    per = n * (2 if name in ("pair-kmeans", "similarity-kmeans") else 1)
    return {"loss": h["loss"]}, per / h["seconds"][-1]


def peak_memory() -> int | None:
    """Peak bytes on the first accelerator where the backend reports it (None on a CPU)."""
    import keras

    try:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        elif keras.backend.backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None
        elif keras.backend.backend() == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
    except Exception:
        return None
    return None


def check_method(name: str, data, info, seed: int = 0, host_augment_img_s: float = 0.0) -> dict:
    """Run one method's full path at smoke size; never raises (a failure is reported with its traceback)."""
    cls = get_method(name)
    no_resume = {key: False for key in ("checkpoint_dir", "cache_dir") if key in getattr(cls, "defaults", {})}
    est = cls.for_smoke(data.n_classes, seed, **no_resume)  # a check trains afresh, even on Colab
    row = {"method": name, "ok": False, "replicas": info.replicas,
           "policy": "mixed_float16" if info.mixed_precision else "float32",
           "smoke": dict(cls.smoke), "full_settings": _plain(cls.presets.get("full", {}))}
    t0 = time.perf_counter()
    try:
        est.fit(data.x, data.y if cls.needs_labels else None)
        pred = np.asarray(est.predict(data.x))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        curves, speed = curves_and_speed(name, est, len(data.x))
        values = np.concatenate([np.asarray(c, np.float64) for c in curves.values()])
        row["loss_curves"] = {k: [round(float(v), 5) for v in c] for k, c in curves.items()}
        first = next(iter(curves.values()))
        row.update(loss_first=float(first[0]), loss_last=float(first[-1]),
                   steps=int(sum(len(c) for c in curves.values())), finite=bool(np.isfinite(values).all()),
                   goes_down=bool(all(c[-1] < c[0] for c in curves.values())),
                   prediction_shape=list(pred.shape),
                   shape_ok=bool(pred.shape == (len(data.x),) and 0 <= pred.min() and pred.max() < data.n_classes),
                   images_per_second=round(float(speed), 1), peak_memory=peak_memory())
        full_p = cls.for_profile(data.n_classes, runtime.PROFILES["full"], seed).params
        w = work(name, full_p, GTSRB_IMAGES, data.n_classes)
        row["full_work_images"] = w
        row["projected_minutes"] = round((w["train"] + w["forward"] / 3) / speed / 60, 1)
        net = network_of(name, est)
        row["flops_per_image"] = forward_flops(net) if net is not None else None
        if row["flops_per_image"]:
            row.update(t4_minutes(row["flops_per_image"], w, host_augment_img_s))
        row["ok"] = row["finite"] and row["goes_down"] and row["shape_ok"]
    except Exception as e:  # the check reports every method, whatever fails
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()[-4000:]
    return row


def _plain(settings: dict) -> dict:
    """Settings as JSON writes them (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


def run(methods=None, emulate: bool = False, images: int = 384, seed: int = 0, out=None, verbose: bool = True) -> dict:
    """The check over `methods` (default: every trained method); writes JSON to `out` when given."""
    from .benchmark import provenance, write_json

    info = runtime.setup(seed, "full", emulate_replicas=2 if emulate else 0, verbose=verbose)
    data = load_dataset("synthetic-signs", "train", n_images=images, seed=seed)
    host = host_augmentation_speed()
    rows = []
    for name in methods or METHODS:
        if verbose:
            print(f"{name}: full path at smoke size ...", flush=True)
        rows.append(check_method(name, data, info, seed, host))
        if verbose:
            r = rows[-1]
            status = "ok" if r["ok"] else f"FAILED {r.get('error', '')}"
            print(f"  {status}  loss {r.get('loss_first', float('nan')):.4g} -> {r.get('loss_last', float('nan')):.4g}"
                  f"  {r.get('images_per_second', 0):.0f} images/s  {r['seconds']:.0f} s"
                  f"  full profile: ~{r.get('projected_minutes', float('nan')):.0f} min here,"
                  f" ~{r.get('t4_minutes', float('nan')):.0f} min on a T4", flush=True)
    doc = {"emulated": emulate, "replicas": info.replicas,
           "policy": "mixed_float16" if info.mixed_precision else "float32", "images": images,
           "host_augment_img_s": round(host, 1),
           "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "t4_tflops_assumed": T4_TFLOPS, "methods": rows,
           "ok": all(r["ok"] for r in rows), **provenance(info)}
    if out:
        write_json(out, doc)
        Path(out).with_suffix(".md").write_text(markdown(doc, Path(out).name))
    return doc


RESUMES = {"supervised-cnn": "every epoch", "autoencoder-kmeans": "every epoch", "pair-kmeans": "every epoch",
           "similarity-kmeans": "every epoch", "iic": "every epoch", "deepcluster": "every epoch",
           "scan": "every pretext epoch; the SCAN step and self-labeling rerun"}


def markdown(doc: dict, source: str = "") -> str:
    """The check as a Markdown table: method, full settings, minutes (here and projected on a T4), resume."""
    where = (f"{doc['replicas']} {'emulated ' if doc['emulated'] else ''}replicas, {doc['policy']}, {doc['device']}, "
             f"{doc['machine']}, {doc['date'][:10]}")
    lines = [f"# GPU check ({where})", "",
             f"Written by `python -m course_lib gpucheck{' --emulate' if doc['emulated'] else ''}` ({source}). Each "
             f"method's full code path at smoke size on {doc['images']} synthetic signs; `T4 min` projects the full "
             f"profile on GTSRB (39,209 images) from the network's FLOPs at {doc['t4_tflops_assumed']:g} TFLOPS plus "
             f"the host's work between phases, with augmentation on the GPU (on Colab's two host cores instead: "
             + (f"`host-aug min`, from {doc['host_augment_img_s']:,.0f} augmented images/s measured here)."
                if doc["host_augment_img_s"] else "`host-aug min`, not measured here: no TensorFlow, no tf.data)."),
             "",
             "| method | ok | loss first -> last | images/s here | full profile min here | T4 min | host-aug min | "
             "resumes | full settings |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["methods"]:
        settings = ", ".join(f"{k}={v}" for k, v in r["full_settings"].items())
        if "error" in r:
            lines.append(f"| {r['method']} | FAILED: {r['error'][:80]} | | | | | | | {settings} |")
            continue
        lines.append(f"| {r['method']} | {'yes' if r['ok'] else 'NO'} | {r['loss_first']:.4g} -> {r['loss_last']:.4g} | "
                     f"{r['images_per_second']:,.0f} | {r['projected_minutes']:,.0f} | {r.get('t4_minutes', '-')} | "
                     f"{r.get('t4_minutes_if_augmented_on_host') or '-'} | {RESUMES.get(r['method'], '-')} | {settings} |")
    return "\n".join(lines) + "\n"

