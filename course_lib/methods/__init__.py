"""Every method of the kit, with one scikit-learn-like shape.

    method = get_method("pixels-kmeans").for_profile(n_clusters=43, profile=profile, seed=0)
    labels = method.fit(x_train).predict(x_test)

`fit(x, y=None)` sees labels only when the method `needs_labels` (the supervised upper reference).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..runtime import Profile, checkpoint_root

REGISTRY: dict[str, type["Method"]] = {}


def register(cls):
    """Class decorator: make a method available to the benchmark by its `name`."""
    REGISTRY[cls.name] = cls
    return cls


class Method:
    name = "method"
    needs_labels = False  # True: fit(x, y) uses labels (only the supervised reference)
    predicts_labels = False  # True: predictions are class ids, scored without a mapping
    presets: dict[str, dict] = {}  # hyperparameters per profile name (quick / standard / full)
    # sizes (epochs, batch, steps): the full preset's networks, pipelines, losses and loops in seconds, as
    # `python -m course_lib gpucheck` runs them (SCAN also lowers its confidence threshold: few steps make no
    # 0.99-confident sample, and the check must reach self-labeling)
    smoke: dict = {}

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        self.n_clusters, self.seed, self.params = n_clusters, seed, params

    @classmethod
    def for_profile(cls, n_clusters: int, profile: Profile, seed: int = 0, **options) -> "Method":
        """The method with its profile's preset hyperparameters, overridden by `options`."""
        params = {**cls.presets.get(profile.name, {}), **options}
        return cls(n_clusters, seed=seed, **params)

    @classmethod
    def for_smoke(cls, n_clusters: int, seed: int = 0, **options) -> "Method":
        """The full profile's method at smoke size (`smoke`): what a GPU session runs, for a few steps."""
        from ..runtime import PROFILES

        return cls.for_profile(n_clusters, PROFILES["full"], seed, **{**cls.smoke, **options})

    def fit(self, x, y=None) -> "Method":
        raise NotImplementedError

    def predict(self, x):
        raise NotImplementedError

    def fit_predict(self, x, y=None):
        return self.fit(x, y).predict(x)

    # ---- the images fit() saw. The benchmark and the notebooks score a method on the very array it was fitted
    # on; a method whose features are costly (HOG, a CNN pass) keeps them rather than computing them twice.
    def _keep_fitted(self, x, features=None) -> None:
        self._fitted = (x, features)

    def _is_fitted_on(self, x) -> bool:
        """True when x is the very array fit() was given (compared by identity: an equal copy is not)."""
        fitted = getattr(self, "_fitted", None)
        return fitted is not None and fitted[0] is x

    def _features_of(self, x, compute):
        """compute(x), or the features fit() kept when x is the array it was fitted on."""
        return self._fitted[1] if self._is_fitted_on(x) and self._fitted[1] is not None else compute(x)

    def checkpoint_folder(self, x, key: str = "checkpoint_dir") -> str | None:
        """Where this run keeps what lets it resume: the `checkpoint_dir` (SCAN: `cache_dir`) given, else, on
        Colab / Kaggle or with $COURSE_CHECKPOINTS set (`runtime.checkpoint_root`), a folder named by the method,
        a hash of its settings, seed and images: running the same cell again continues, another run never loads
        it. None: nothing is saved (also when the option is False: never checkpoint)."""
        if self.params.get(key) is False:
            return None
        if self.params.get(key):
            return str(self.params[key])
        root = checkpoint_root()
        if root is None:
            return None
        x = np.ascontiguousarray(x)
        settings = json.dumps({k: v for k, v in self.get_params().items() if k != key}, sort_keys=True, default=str)
        digest = hashlib.sha1(settings.encode() + str(x.shape).encode() + x[::max(1, len(x) // 997)].tobytes())
        return str(Path(root) / f"{self.name}-{digest.hexdigest()[:12]}")

    def get_params(self) -> dict:
        return {"n_clusters": self.n_clusters, "seed": self.seed, **self.params}


def get_method(name: str) -> type[Method]:
    _import_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: registered methods are {sorted(REGISTRY)}") from None


def available() -> list[str]:
    _import_all()
    return list(REGISTRY)


def _import_all() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
