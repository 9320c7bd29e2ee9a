"""Features + clustering: hand-crafted HOG (seed 004) and pretrained CNN features (seed 000).

Seed 000 fed 32x32 signs to VGG16/VGG19/ResNet50 and got ~15% accuracy: at 32 px those networks end in a
1x1 map, the images were not preprocessed the way each network expects, and KMeans ran on raw features.
Here: images resized up, each backbone's own `preprocess_input`, global average pooling at a chosen layer,
then PCA (whitened) + L2 + KMeans.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ..data import data_dir, resize_images
from ..runtime import atomic_write
from . import register
from .pixels import FeatureKMeans

WEIGHTS_ENV = "COURSE_WEIGHTS_DIR"  # a folder holding Keras weight files (offline machines)


# ---------------------------------------------------------------- hand-crafted
def hue_histograms(x: np.ndarray, bins: int = 8) -> np.ndarray:
    """Per image, the share of its pixels in `bins` hue bins, each pixel weighted by its saturation times its
    value: red rims, blue discs and yellow diamonds, whatever the lighting; grey and dark pixels count little."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(x.astype(np.float32) / 255.0, 0, 1)).reshape(len(x), -1, 3)
    which = np.minimum((hsv[..., 0] * bins).astype(int), bins - 1)
    weight = hsv[..., 1] * hsv[..., 2]
    out = np.zeros((len(x), bins), np.float32)
    np.add.at(out, (np.repeat(np.arange(len(x)), which.shape[1]), which.ravel()), weight.ravel())
    return out / which.shape[1]


def hog_features(x: np.ndarray, border: int = 2, orientations: int = 9, cell: int = 4, block: int = 2,
                 colour_bins: int = 0, colour_weight: float | None = None, hue_bins: int = 0) -> np.ndarray:
    """HOG of the greyscale image (border pixels cropped), optionally with per-channel colour histograms
    (`colour_bins`) or saturation-weighted hue histograms (`hue_bins`, `hue_histograms`).

    The histograms hold the share of pixels per bin; with `colour_weight` each image's histogram vector is
    rescaled to `colour_weight` times the length of its HOG vector, so that neither part drowns the other.
    """
    from skimage.feature import hog

    x = x[:, border:x.shape[1] - border, border:x.shape[2] - border] if border else x
    grey = x.mean(-1) if x.shape[-1] == 3 else x[..., 0].astype(np.float32)
    feats = np.stack([hog(g, orientations=orientations, pixels_per_cell=(cell, cell),
                          cells_per_block=(block, block), block_norm="L2-Hys") for g in grey]).astype(np.float32)
    if colour_bins or hue_bins:
        if hue_bins:
            hists = hue_histograms(x, hue_bins)
        else:
            hists = [np.stack([np.histogram(img[..., c], colour_bins, (0, 256))[0] for c in range(img.shape[-1])]).ravel()
                     for img in x]
            hists = np.asarray(hists, np.float32) / (x.shape[1] * x.shape[2])
        if colour_weight is not None:
            scale = colour_weight * np.linalg.norm(feats, axis=1) / np.maximum(np.linalg.norm(hists, axis=1), 1e-12)
            hists = hists * scale[:, None]
        feats = np.concatenate([feats, hists], 1)
    return feats


def describe_views(x: np.ndarray, describe, perturb, copies: int, batch: int = 2048) -> np.ndarray:
    """describe(x) and describe(perturb(x)) for `copies` independently perturbed copies: (1 + copies) x N x D.

    `perturb` is a Keras augmentation pipeline ([0, 255] in and out, run with training=True); `describe` turns
    images into feature vectors (e.g. `hog_features`). Row 0 describes the unperturbed images.
    """
    import keras

    out = [describe(x)]
    for _ in range(copies):
        views = np.concatenate([keras.ops.convert_to_numpy(perturb(x[i:i + batch].astype("float32"), training=True))
                                for i in range(0, len(x), batch)])
        out.append(describe(np.clip(views, 0, 255)))
    return np.stack(out)


@register
class HogKMeans(FeatureKMeans):
    """HOG (+ colour histograms) -> PCA-64 whitened -> L2 -> KMeans: the classical bar."""

    name = "hog-kmeans"
    defaults = dict(border=2, orientations=9, cell=4, block=2, colour_bins=0, pca_dim=64, whiten=True, l2=True,
                    algorithm="kmeans", n_init=10)

    def features(self, x):
        p = self.params
        return hog_features(x, p["border"], p["orientations"], p["cell"], p["block"], p["colour_bins"])


# ---------------------------------------------------------------- pretrained CNNs
def _apps():
    import keras

    return keras.applications


# name -> (constructor, preprocess_input, default feature layer, weights file of the no-top model)
BACKBONES = {
    "vgg16": (lambda: _apps().VGG16, lambda: _apps().vgg16.preprocess_input, "block5_conv3",
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": (lambda: _apps().VGG19, lambda: _apps().vgg19.preprocess_input, "block5_conv4",
              "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": (lambda: _apps().ResNet50, lambda: _apps().resnet50.preprocess_input, "conv5_block3_out",
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "mobilenetv3small": (lambda: _apps().MobileNetV3Small, lambda: (lambda a: a), None,
                         "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "squeezenet": (None, lambda: _apps().vgg16.preprocess_input, "fire9_concat",
                   "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}


def resolve_weights(backbone: str, weights: str | None) -> str | None:
    """'imagenet' -> a local weights file when one is found ($COURSE_WEIGHTS_DIR, ~/.keras/models), else
    'imagenet' (Keras downloads it). None -> random weights, with a loud warning."""
    if weights is None:
        warnings.warn(f"{backbone} with weights=None: RANDOM features, a control only, not a pretrained result",
                      stacklevel=3)
        return None
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file not found: {weights}")
        return weights
    fname = BACKBONES[backbone][3]
    for folder in (os.environ.get(WEIGHTS_ENV), Path.home() / ".keras" / "models"):
        if folder and (Path(folder) / fname).is_file():
            return str(Path(folder) / fname)
    if backbone == "squeezenet":
        raise FileNotFoundError(f"SqueezeNet weights are not in keras.applications: put {fname} in ${WEIGHTS_ENV}")
    return "imagenet"


def pretrained_available(backbone: str) -> bool:
    """True when real ImageNet weights for `backbone` can be had: a local file, or a download (online)."""
    try:
        w = resolve_weights(backbone, "imagenet")
    except FileNotFoundError:
        return False
    if w != "imagenet":
        return True
    from ..download import is_online

    return is_online("storage.googleapis.com")


def build_backbone(backbone: str, image_size: int, weights: str | None = "imagenet", layer: str | None = None,
                   preprocess: bool = True):
    """A model from images in [0, 255] to globally average-pooled features of `layer` (default: the last).

    preprocess=False skips the backbone's own `preprocess_input` (seed 000's mistake, kept to show its cost).
    """
    import keras

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {sorted(BACKBONES)}")
    ctor, preprocess_fn, default_layer, _ = BACKBONES[backbone]
    weights = resolve_weights(backbone, weights)
    shape = (image_size, image_size, 3)
    if backbone == "squeezenet":
        from ..models import squeezenet

        base = squeezenet(shape)
        if weights:
            load_h5_weights_by_name(base, weights)
    else:
        kw = dict(include_top=False, weights=weights, input_shape=shape)
        if backbone == "mobilenetv3small":
            kw["include_preprocessing"] = True
        try:
            base = ctor()(**kw)
        except Exception as e:
            if "URL fetch failure" in str(e) or "Name or service not known" in str(e):
                raise ConnectionError(
                    f"cannot download the ImageNet weights of {backbone}: this machine is offline. Copy "
                    f"{BACKBONES[backbone][3]} into ~/.keras/models or a folder named by ${WEIGHTS_ENV}, or run "
                    f"backbone='squeezenet' with its local weights, or weights=None (random features, a control)"
                ) from None
            raise
    feat = base.get_layer(layer or default_layer).output if (layer or default_layer) else base.output
    inputs = keras.Input(shape)
    x = keras.layers.Lambda(preprocess_fn(), name="preprocess")(inputs) if preprocess else inputs
    sub = keras.Model(base.inputs, feat)
    x = keras.layers.GlobalAveragePooling2D()(sub(x))
    return keras.Model(inputs, x, name=f"{backbone}_features")


def load_h5_weights_by_name(model, path: str) -> int:
    """Load an old-format Keras .h5 weights file layer by layer, matching names ("/" read as "_");
    returns the number of layers loaded."""
    import h5py

    loaded = 0
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
        by_name = {n.replace("/", "_"): n for n in names}  # "fire2/squeeze1x1" is a nested h5 path
        for layer in model.layers:
            if layer.name in by_name and layer.weights:
                g = group[by_name[layer.name]]
                names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
                layer.set_weights([np.asarray(g[n]) for n in names])
                loaded += 1
    if not loaded:
        raise ValueError(f"no layer of {model.name} matched a layer name in {path}")
    return loaded


def prepare_images(x: np.ndarray, centre_crop: float = 1.0, autocontrast: bool = False) -> np.ndarray:
    """Before a backbone: keep the central `centre_crop` of the side (GTSRB signs sit in the middle, the
    border is background) and, with `autocontrast`, stretch each image to the full 0-255 range (many GTSRB
    frames are nearly black; ImageNet features of a dark image describe the darkness)."""
    if not 0 < centre_crop <= 1:
        raise ValueError(f"centre_crop is a fraction of the side in (0, 1], got {centre_crop}")
    if centre_crop < 1:
        h, w = x.shape[1:3]
        ch, cw = max(1, round(h * centre_crop)), max(1, round(w * centre_crop))
        x = x[:, (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    if autocontrast:
        lo = x.min(axis=(1, 2, 3), keepdims=True).astype(np.float32)
        hi = x.max(axis=(1, 2, 3), keepdims=True).astype(np.float32)
        x = ((x - lo) * (255.0 / np.maximum(hi - lo, 1.0))).round().astype(np.uint8)
    return np.ascontiguousarray(x)


def extract_features(x: np.ndarray, backbone: str = "vgg16", image_size: int = 64, weights="imagenet",
                     layer: str | None = None, batch_size: int = 128, cache: bool = True,
                     verbose: int = 1, preprocess: bool = True, centre_crop: float = 1.0,
                     autocontrast: bool = False) -> np.ndarray:
    """Pooled backbone features of uint8 images (after `prepare_images`), batched with a progress bar and
    cached on disk per (backbone, layer, size, weights, preprocessing, images)."""
    x = prepare_images(x, centre_crop, autocontrast)
    digest = hashlib.sha1(np.ascontiguousarray(x).data).hexdigest()[:16]
    tag = "random" if weights is None else Path(str(weights)).stem[:20]
    path = data_dir() / "cache" / "features" / f"{backbone}-{layer or 'last'}-{image_size}-{tag}{'' if preprocess else '-raw'}-{digest}.npy"
    if cache and path.is_file():
        return np.load(path, allow_pickle=False)
    model = build_backbone(backbone, image_size, weights, layer, preprocess)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    feats = []
    t0 = time.perf_counter()
    for i in range(0, len(x), 2048):  # resize chunk by chunk to keep memory small at large sizes
        chunk = resize_images(x[i:i + 2048], image_size).astype("float32")
        feats.append(model.predict(chunk, batch_size=batch_size, verbose=verbose if i == 0 else 0))
    feats = np.concatenate(feats).astype(np.float32)
    if verbose:
        print(f"{backbone} features {feats.shape} in {time.perf_counter() - t0:.1f} s")
    if cache:
        with atomic_write(path) as tmp:
            np.save(tmp, feats)
    return feats


@register
class FeaturesKMeans(FeatureKMeans):
    """Pretrained backbone features -> PCA (whitened) -> L2 -> KMeans / MiniBatchKMeans / GMM / agglomerative."""

    name = "features-kmeans"
    defaults = dict(backbone="vgg16", image_size=64, weights="imagenet", layer=None, preprocess=True,
                    centre_crop=1.0, autocontrast=False, pca_dim=50,
                    whiten=True, l2=True, algorithm="kmeans", n_init=10, cache=True, verbose=0)

    def features(self, x):  # FeatureKMeans.fit times it (timings_["features"]: the extraction)
        p = self.params
        return extract_features(x, p["backbone"], p["image_size"], p["weights"], p["layer"], cache=p["cache"],
                                verbose=p["verbose"], preprocess=p["preprocess"], centre_crop=p["centre_crop"],
                                autocontrast=p["autocontrast"])

