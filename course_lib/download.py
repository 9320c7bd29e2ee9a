"""Downloads: tensorflow-datasets, the Kaggle API, and archive extraction that stays in its folder.

Every failure says what went wrong and what to do (offline machine, missing credentials, ...).
"""
from __future__ import annotations

import json
import os
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from .data import Dataset, DatasetError, data_dir

GTSRB_KAGGLE_SLUGS = ("meowmeowmeowmeowmeow/gtsrb-german-traffic-sign", "jerems69/german-signs")
CIFAR100_COARSE = ["aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables",
                   "household electrical devices", "household furniture", "insects", "large carnivores",
                   "large man-made outdoor things", "large natural outdoor scenes",
                   "large omnivores and herbivores", "medium-sized mammals", "non-insect invertebrates",
                   "people", "reptiles", "small mammals", "trees", "vehicles 1", "vehicles 2"]


class OfflineError(DatasetError):
    """Data must be downloaded but this machine cannot reach the server."""


class MissingCredentialsError(DatasetError):
    """The Kaggle API needs credentials that were not found."""


class UnsafeArchiveError(DatasetError):
    """An archive entry would be written outside the target folder."""


def is_online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 2.0) -> bool:
    """True when `host` answers; a fast check before a download that would otherwise retry for minutes."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- tensorflow-datasets
def load_tfds(name: str, split: str) -> Dataset:
    """mnist, cifar10, stl10 or cifar100-20 as numpy arrays, from the local tfds folder or downloaded.

    Tries the local copy first (fails in well under a second when absent), downloads only when online.
    """
    try:
        import importlib_resources  # noqa: F401  tfds 4.9.x needs it at load time
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetError(f"{name} comes through tensorflow-datasets, which is not importable ({e}); "
                           "run: pip install tensorflow tensorflow-datasets importlib_resources") from None
    tfds_name = "cifar100" if name == "cifar100-20" else name
    tfds_dir = str(data_dir() / "tensorflow_datasets")
    label_key = "coarse_label" if name == "cifar100-20" else "label"
    kwargs = dict(split=split, data_dir=tfds_dir, batch_size=-1, with_info=True)
    try:
        data, info = tfds.load(tfds_name, download=False, **kwargs)
    except Exception:
        if not is_online():
            raise OfflineError(
                f"{name!r} is not in {tfds_dir} and this machine is offline, so tensorflow-datasets cannot "
                f"download it. Run once with internet (Colab/Kaggle/your laptop) to fill that folder, or copy "
                f"a tensorflow_datasets folder there (or set COURSE_DATA_DIR), or use offline data: "
                f"'digits', 'synthetic-signs' or 'npz:PATH'."
            ) from None
        data, info = tfds.load(tfds_name, download=True, **kwargs)
    arrays = tfds.as_numpy(data)
    x, y = arrays["image"], arrays[label_key].astype(np.int64)
    names = CIFAR100_COARSE if name == "cifar100-20" else info.features["label"].names
    return Dataset(x.astype(np.uint8), y, list(names), name, np.arange(len(x)))


# ---------------------------------------------------------------- Kaggle
def kaggle_credentials() -> tuple[str, str] | None:
    """(username, key) from the environment, kaggle.json or Colab secrets; None when none is found."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return user, key
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    token = config_dir / "kaggle.json"
    if token.is_file():
        try:
            d = json.loads(token.read_text())
            if d.get("username") and d.get("key"):
                return d["username"], d["key"]
        except (OSError, ValueError):
            pass
    try:  # Colab: Secrets panel (the key icon) with KAGGLE_USERNAME and KAGGLE_KEY
        from google.colab import userdata  # type: ignore

        return userdata.get("KAGGLE_USERNAME"), userdata.get("KAGGLE_KEY")
    except Exception:
        return None


CREDENTIALS_HELP = """Kaggle API credentials were not found. Provide them in one of these ways:
  1. environment variables KAGGLE_USERNAME and KAGGLE_KEY;
  2. the file ~/.kaggle/kaggle.json (Kaggle > Settings > API > Create New Token), chmod 600,
     or a folder named by KAGGLE_CONFIG_DIR that holds it;
  3. on Colab: Secrets (key icon) KAGGLE_USERNAME and KAGGLE_KEY, with notebook access on;
  4. on Kaggle: add the dataset to the notebook (Add Input); it is then found under /kaggle/input.
Or download the dataset yourself and pass its folder: load_dataset('gtsrb:/path/to/folder')."""


def kaggle_download(slug: str, dest: Path) -> Path:
    """Download a Kaggle dataset zip into dest and extract it safely; returns dest."""
    creds = kaggle_credentials()
    if not creds or not all(creds):
        raise MissingCredentialsError(CREDENTIALS_HELP)
    if not is_online("www.kaggle.com"):
        raise OfflineError(f"cannot reach kaggle.com to download {slug}: this machine is offline. "
                           "Download it elsewhere and pass its folder: load_dataset('gtsrb:/path/to/folder').")
    os.environ.setdefault("KAGGLE_USERNAME", creds[0])
    os.environ.setdefault("KAGGLE_KEY", creds[1])
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    api.authenticate()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    api.dataset_download_files(slug, path=str(dest), unzip=False, quiet=False)
    for archive in dest.glob("*.zip"):
        safe_extract(archive, dest)
        archive.unlink()
    return dest


def download_gtsrb(dest: Path) -> Path:
    """GTSRB through the Kaggle API (the common copy first, then the seed's)."""
    errors = []
    for slug in GTSRB_KAGGLE_SLUGS:
        try:
            return kaggle_download(slug, dest)
        except (MissingCredentialsError, OfflineError):
            raise
        except Exception as e:  # a slug that moved: try the next one
            errors.append(f"{slug}: {type(e).__name__}: {e}")
    raise DatasetError("could not download GTSRB from Kaggle:\n  " + "\n  ".join(errors))


# ---------------------------------------------------------------- archives
def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a zip or tar archive into dest, refusing (before writing anything) any entry that would land
    outside dest: absolute paths, '..' components, links."""
    archive, dest = Path(archive), Path(dest).resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _check_members(archive, dest, names)
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = t.getmembers()
            bad = [m.name for m in members if m.issym() or m.islnk() or m.isdev()]
            if bad:
                raise UnsafeArchiveError(f"{archive.name}: refusing links/devices {bad[:3]}; nothing was extracted")
            names = [m.name for m in members]
            _check_members(archive, dest, names)
            t.extractall(dest)
    else:
        raise DatasetError(f"{archive} is neither a zip nor a tar archive")
    return [dest / n for n in names]


def _check_members(archive: Path, dest: Path, names: list[str]) -> None:
    bad = []
    for n in names:
        target = (dest / n).resolve()
        if os.path.isabs(n) or (target != dest and dest not in target.parents):
            bad.append(n)
    if bad:
        raise UnsafeArchiveError(f"{archive.name}: refusing entries outside {dest}: {bad[:3]}; nothing was extracted")
