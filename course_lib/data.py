"""Datasets as numpy arrays: one entry point, `load_dataset(name, split, image_size)`.

Names:
- `gtsrb` (found automatically: $GTSRB_DIR, data/gtsrb, a Kaggle notebook's /kaggle/input mount, else the
  Kaggle API), or `gtsrb:PATH` for a folder in the Kaggle or the official GTSRB layout;
- `folder:PATH`: any `PATH/<class>/*.png|jpg|ppm` tree;
- `mnist`, `cifar10`, `stl10`, `cifar100-20` (CIFAR-100's 20 superclasses) through tensorflow-datasets;
- `npz:PATH[,PATH...]`: arrays `x` (uint8 NHWC) and `y`, concatenated;
- built in, offline: `digits` (scikit-learn's 8x8 handwritten digits, upsampled) and `synthetic-signs`
  (a procedural 43-class GTSRB look-alike, see `course_lib.signs`).
Images are uint8 N x H x W x C. Prepared folder and tfds arrays are cached under data/cache/.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .runtime import atomic_write

GTSRB_CLASS_NAMES = (  # also the synthetic signs' classes (`signs.CLASS_NAMES`)
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp"}
GTSRB_TRACK_LEN = 30  # GTSRB training tracks: 30 frames of one physical sign
GTSRB_LAYOUTS = """expected one of these layouts:
  Kaggle:   Train/<ClassId>/*.png, Test/*.png + Test.csv, Meta/ (Train.csv and Meta.csv optional)
  official: Final_Training/Images/000NN/GT-000NN.csv + *.ppm, Final_Test/Images/*.ppm + GT-final_test.csv
  (the folder itself or one of its sub-folders, up to 3 levels down)"""


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says why and what to do."""


class LayoutError(DatasetError):
    """A folder is not in any layout the loader knows."""


@dataclass
class Dataset:
    """Images with (optional) labels. `groups` are track ids for leak-free splits."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: list[str]
    name: str
    groups: np.ndarray | None = None
    n_skipped: int = 0  # unreadable files skipped while loading
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx) -> "Dataset":
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return replace(self, x=self.x[idx], y=pick(self.y), groups=pick(self.groups))


def data_dir() -> Path:
    """Where downloads and caches go: $COURSE_DATA_DIR, else the kit's data/ folder."""
    env = os.environ.get("COURSE_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    return repo / "data" if (repo / "data").is_dir() else Path.home() / ".course_kit" / "data"


# ---------------------------------------------------------------- entry point
def load_dataset(name: str, split: str = "train", image_size: int | None = None, max_images: int | None = None,
                 seed: int = 0, roi_crop: bool = False, n_images: int | None = None,
                 cache: bool = True) -> Dataset:
    """Load `name` (see the module docstring) as uint8 NHWC arrays.

    split: 'train' or 'test'. image_size: resize to a square side (None keeps the source size; folder
    sources, whose images differ in size, default to 32). max_images: a seeded, class-stratified
    subsample. roi_crop: crop GTSRB images to their annotated region of interest. n_images: how many
    images a generator (synthetic-signs) draws.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    kind, _, arg = name.partition(":")
    kind = kind.lower()
    if kind == "npz":
        ds = load_npz(arg.split(","))
    elif kind == "synthetic-signs":
        ds = load_synthetic_signs(split, n_images or 3000, image_size or 32, seed)
    elif kind == "digits":
        ds = load_digits(split, image_size or 32)
    elif kind in ("gtsrb", "folder"):
        ds = _cached(f"{name}|{split}|{image_size or 32}|{roi_crop}", cache,
                     lambda: _load_folder(kind, arg, split, image_size or 32, roi_crop))
    elif kind in TFDS_NAMES:
        from .download import load_tfds

        ds = _cached(f"{kind}|{split}", cache, lambda: load_tfds(kind, split))
    else:
        raise DatasetError(
            f"Unknown dataset {name!r}. Known: gtsrb, gtsrb:PATH, folder:PATH, npz:PATH[,PATH], "
            f"synthetic-signs, digits, {', '.join(sorted(TFDS_NAMES))}."
        )
    if image_size and ds.x.shape[1:3] != (image_size, image_size):
        ds = replace(ds, x=resize_images(ds.x, image_size))
    if max_images and len(ds) > max_images:
        ds = ds.subset(stratified_subsample(ds.y, max_images, seed, len(ds)))
    return ds


def stratified_subsample(y, n: int, seed: int = 0, n_total: int | None = None) -> np.ndarray:
    """Indices of a seeded subsample of size n that keeps class proportions (sorted)."""
    rng = np.random.default_rng(seed)
    if y is None:
        return np.sort(rng.choice(n_total, n, replace=False))
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    strat = y if counts[counts > 0].min() >= 2 and n >= len(counts) else None
    keep, _ = train_test_split(idx, train_size=n, stratify=strat, random_state=seed)
    return np.sort(keep)


def track_split(ds: Dataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split by group (GTSRB track) so no physical sign is in both parts; random when there are no groups.

    A random split of GTSRB leaks: the ~30 frames of one track are near-duplicates.
    """
    from sklearn.model_selection import GroupShuffleSplit

    groups = ds.groups if ds.groups is not None else np.arange(len(ds))
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train_idx, test_idx = next(splitter.split(np.zeros(len(ds)), ds.y, groups))
    return ds.subset(np.sort(train_idx)), ds.subset(np.sort(test_idx))


def contiguous_tracks(y: np.ndarray, track_len: int = GTSRB_TRACK_LEN) -> np.ndarray:
    """Group ids for data stored track by track: runs of one label cut into blocks of `track_len`.

    GTSRB's Train.csv order (and so ../shared/data's npz) keeps each track's 30 frames together. Only for
    data known to be stored that way (`stored_in_tracks`): on other data the blocks would be invented tracks.
    """
    starts = np.r_[0, np.flatnonzero(np.diff(y)) + 1]
    run_id = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(y)]))
    pos = np.arange(len(y)) - starts[run_id]
    block = pos // track_len
    return (run_id * (len(y) // track_len + 1) + block).astype(np.int64)


def stored_in_tracks(y: np.ndarray, track_len: int = GTSRB_TRACK_LEN) -> bool:
    """True for GTSRB training frames in their stored order: 43 classes, and the label changes only between
    runs of at least one track (median run >= track_len). MNIST, CIFAR and shuffled GTSRB are not."""
    if y is None or len(y) == 0 or int(y.max()) + 1 != len(GTSRB_CLASS_NAMES):
        return False
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(y)) + 1, len(y)])
    return bool(np.median(runs) >= track_len)


# ---------------------------------------------------------------- array sources
def load_npz(paths: list[str]) -> Dataset:
    """npz files with `x` (uint8 NHWC), `y` and optionally `groups` (track ids); several are concatenated.

    Without `groups`, a file gets GTSRB's tracks only when it is stored track by track (`stored_in_tracks`);
    data without tracks (MNIST) gets none. Never unpickles.
    """
    xs, ys, gs = [], [], []
    for p in paths:
        p = _find_file(p)
        with np.load(p, allow_pickle=False) as f:
            if "x" not in f:
                raise DatasetError(f"{p} has no array 'x' (arrays: {list(f.keys())}); expected x (uint8 NHWC) and y")
            xs.append(_as_nhwc_uint8(f["x"], str(p)))
            ys.append(f["y"].astype(np.int64) if "y" in f else None)
            gs.append(f["groups"].astype(np.int64) if "groups" in f
                      else contiguous_tracks(ys[-1]) if stored_in_tracks(ys[-1]) else None)
    if len({x.shape[1:] for x in xs}) > 1:
        raise DatasetError(f"npz files have different image shapes: {[x.shape[1:] for x in xs]}")
    x = np.concatenate(xs)
    y = None if any(v is None for v in ys) else np.concatenate(ys)
    n_classes = int(y.max()) + 1 if y is not None else 0
    names = GTSRB_CLASS_NAMES if n_classes == 43 else [str(i) for i in range(n_classes)]
    groups = None
    if any(g is not None for g in gs):  # a file without tracks: one group per image; ids never shared
        parts, offset = [], 0
        for xi, g in zip(xs, gs):
            g = np.arange(len(xi)) if g is None else np.unique(g, return_inverse=True)[1]
            parts.append(g.astype(np.int64) + offset)
            offset += int(g.max()) + 1 if len(g) else 0
        groups = np.concatenate(parts)
    return Dataset(x, y, list(names), "npz:" + ",".join(Path(p).name for p in paths), groups)


def _find_file(path: str) -> Path:
    """A relative path is tried from the working directory, then from the kit's root (notebooks run in
    notebooks/, so '../shared/data/x.npz' written for the root also works there)."""
    p = Path(path).expanduser()
    root = Path(__file__).resolve().parents[1]
    for candidate in (p, root / p):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"npz file not found: {p} (looked in {Path.cwd()} and {root})")


def load_synthetic_signs(split: str, n: int, image_size: int = 32, seed: int = 0) -> Dataset:
    """The built-in 43-class sign generator; train and test draw from different seeds."""
    from .signs import make_signs

    x, y = make_signs(n, image_size=image_size, seed=seed * 2 + (split == "test") + 12345)
    return Dataset(x, y, list(GTSRB_CLASS_NAMES), "synthetic-signs")


def load_digits(split: str, image_size: int = 32) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits, upsampled; a fixed 80/20 split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.8 * len(x))
    idx = np.sort(order[:cut] if split == "train" else order[cut:])
    return Dataset(resize_images(x[idx], image_size), d.target[idx].astype(np.int64),
                   [str(i) for i in range(10)], "digits")


def _as_nhwc_uint8(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DatasetError(f"{what}: images must be N x H x W x C with C in (1, 3), got shape {x.shape}")
    if x.dtype != np.uint8:
        if x.max() <= 1.0:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 NHWC images to size x size (bilinear)."""
    from PIL import Image

    if x.shape[1:3] == (size, size):
        return x
    out = np.empty((len(x), size, size, x.shape[-1]), np.uint8)
    for i, img in enumerate(x):
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        r = np.asarray(im.resize((size, size), Image.BILINEAR))
        out[i] = r[..., None] if r.ndim == 2 else r
    return out


# ---------------------------------------------------------------- folders
def _load_folder(kind: str, path: str, split: str, size: int, roi_crop: bool) -> Dataset:
    if kind == "folder":
        return _read_class_folders(Path(path), size, name=f"folder:{path}")
    root = Path(path) if path else find_gtsrb()
    layout, base = detect_gtsrb_layout(root)
    reader = {"kaggle": _read_kaggle_layout, "official": _read_official_layout}[layout]
    ds = reader(base, split, size, roi_crop)
    ds.info["layout"] = layout
    return ds


def find_gtsrb() -> Path:
    """A local GTSRB copy ($GTSRB_DIR, data/gtsrb, /kaggle/input/*), else download it with the Kaggle API."""
    candidates = [os.environ.get("GTSRB_DIR"), data_dir() / "gtsrb"]
    kaggle_input = Path("/kaggle/input")
    if kaggle_input.is_dir():
        candidates += sorted(kaggle_input.iterdir())
    for c in candidates:
        if c and Path(c).is_dir():
            try:
                detect_gtsrb_layout(Path(c))
                return Path(c)
            except LayoutError:
                continue
    from .download import download_gtsrb

    return download_gtsrb(data_dir() / "gtsrb")


def detect_gtsrb_layout(root: Path) -> tuple[str, Path]:
    """('kaggle' | 'official', folder) for root or a sub-folder up to 3 levels down; LayoutError otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"GTSRB folder not found: {root}\n{GTSRB_LAYOUTS}")
    queue = [(root, 0)]
    while queue:
        d, depth = queue.pop(0)
        if (d / "Train").is_dir() and any(p.is_dir() for p in (d / "Train").iterdir()):
            return "kaggle", d
        if (d / "Final_Training" / "Images").is_dir():
            return "official", d
        if depth < 3:
            queue += [(s, depth + 1) for s in sorted(d.iterdir()) if s.is_dir()]
    seen = sorted(p.name for p in root.iterdir())[:10]
    raise LayoutError(f"{root} is not a GTSRB folder (it holds: {seen}).\n{GTSRB_LAYOUTS}")


def _read_kaggle_layout(base: Path, split: str, size: int, roi_crop: bool) -> Dataset:
    if split == "train":
        rows = _read_csv(base / "Train.csv") if (base / "Train.csv").is_file() else None
        if rows is None:  # class folders only
            return _read_class_folders(base / "Train", size, name="gtsrb", class_names=GTSRB_CLASS_NAMES,
                                       track_from_name=True)
    else:
        if not (base / "Test.csv").is_file():
            raise LayoutError(f"{base / 'Test.csv'} is missing: the Kaggle layout keeps test labels there.\n"
                              f"{GTSRB_LAYOUTS}")
        rows = _read_csv(base / "Test.csv")
    items = [(base / r["Path"], int(r["ClassId"]), _roi(r) if roi_crop else None) for r in rows]
    return _read_items(items, size, "gtsrb", GTSRB_CLASS_NAMES, track_from_name=split == "train")


def _read_official_layout(base: Path, split: str, size: int, roi_crop: bool) -> Dataset:
    items = []
    if split == "train":
        for csv_path in sorted((base / "Final_Training" / "Images").glob("*/GT-*.csv")):
            for r in _read_csv(csv_path, delimiter=";"):
                items.append((csv_path.parent / r["Filename"], int(r["ClassId"]), _roi(r) if roi_crop else None))
    else:
        images = base / "Final_Test" / "Images"
        gt = next((p for p in (base / "GT-final_test.csv", images / "GT-final_test.csv",
                               base / "Final_Test" / "GT-final_test.csv") if p.is_file()), None)
        if gt is None:
            raise LayoutError(f"GT-final_test.csv (the test labels) not found beside {images}.\n{GTSRB_LAYOUTS}")
        for r in _read_csv(gt, delimiter=";"):
            items.append((images / r["Filename"], int(r["ClassId"]), _roi(r) if roi_crop else None))
    if not items:
        raise LayoutError(f"no GT-*.csv files found under {base / 'Final_Training' / 'Images'}.\n{GTSRB_LAYOUTS}")
    return _read_items(items, size, "gtsrb", GTSRB_CLASS_NAMES, track_from_name=split == "train")


def _read_class_folders(root: Path, size: int, name: str, class_names=None, track_from_name=False) -> Dataset:
    if not root.is_dir():
        raise LayoutError(f"folder not found: {root} (expected <folder>/<class>/<images>)")
    dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: (not d.name.isdigit(), int(d.name)
                                                                            if d.name.isdigit() else 0, d.name))
    if not dirs:
        raise LayoutError(f"{root} has no class sub-folders (expected <folder>/<class>/<images>)")
    items = [(f, i, None) for i, d in enumerate(dirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if class_names is None:
        class_names = [d.name for d in dirs]
    elif all(d.name.isdigit() for d in dirs):  # GTSRB: folder names are the class ids
        items = [(f, int(d.name), None) for d in dirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    return _read_items(items, size, name, class_names, track_from_name)


def _read_csv(path: Path, delimiter: str = ",") -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def _roi(row: dict) -> tuple[int, int, int, int]:
    return tuple(int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))


_TRACK_RE = re.compile(r"^(?:(\d+)_)?(\d+)_(\d+)$")  # Kaggle 000CC_TTTTT_FFFFF, official TTTTT_FFFFF


def _track_id(path: Path, label: int) -> int | None:
    m = _TRACK_RE.match(path.stem)
    return None if m is None else label * 100_000 + int(m.group(2))


def _read_items(items, size: int, name: str, class_names, track_from_name: bool) -> Dataset:
    """Read (path, label, roi) items; unreadable files are skipped, counted and warned about."""
    from PIL import Image, UnidentifiedImageError

    xs, ys, groups, bad = [], [], [], []
    for path, label, roi in items:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if roi is not None:
                    im = im.crop((roi[0], roi[1], roi[2] + 1, roi[3] + 1))
                xs.append(np.asarray(im.resize((size, size), Image.BILINEAR)))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            bad.append(str(path))
            continue
        ys.append(label)
        groups.append(_track_id(path, label) if track_from_name else None)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of {len(items)} (first: {bad[0]}); "
                      "re-download or delete them", stacklevel=3)
    if not xs:
        raise DatasetError(f"no readable images in {name} ({len(bad)} unreadable)")
    g = None
    if track_from_name and all(v is not None for v in groups):
        g = np.asarray(groups, np.int64)
    elif not track_from_name:
        g = np.arange(len(xs), dtype=np.int64)
    ds = Dataset(np.stack(xs), np.asarray(ys, np.int64), list(class_names), name, g, n_skipped=len(bad))
    ds.info["skipped_files"] = bad[:20]
    return ds


# ---------------------------------------------------------------- tfds names and the cache
TFDS_NAMES = {"mnist", "cifar10", "stl10", "cifar100-20"}


def _cached(key: str, enabled: bool, build) -> Dataset:
    """Build a Dataset once and keep it as data/cache/<hash>.npz (no pickles)."""
    path = data_dir() / "cache" / (re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60] + "-"
                                   + hashlib.sha1(key.encode()).hexdigest()[:10] + ".npz")
    if enabled and path.is_file():
        with np.load(path, allow_pickle=False) as f:
            y = f["y"] if f["y"].size else None
            groups = f["groups"] if f["groups"].size else None
            return Dataset(f["x"], y, [str(s) for s in f["class_names"]], str(f["name"]), groups,
                           int(f["n_skipped"]), {"cache": str(path)})
    ds = build()
    if enabled:
        with atomic_write(path) as tmp:  # an interrupted run never leaves half a cache file
            np.savez(tmp, x=ds.x, y=ds.y if ds.y is not None else np.empty(0, np.int64),
                     groups=ds.groups if ds.groups is not None else np.empty(0, np.int64),
                     class_names=np.asarray(ds.class_names, dtype=str), name=np.asarray(ds.name),
                     n_skipped=np.asarray(ds.n_skipped))
    return ds
