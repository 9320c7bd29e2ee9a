"""Every method of the kit, with one scikit-learn-like shape.

    method = get_method("pixels-kmeans").for_profile(n_clusters=43, profile=profile, seed=0)
    labels = method.fit(x_train).predict(x_test)

`fit(x, y=None)` sees labels only when the method `needs_labels` (the supervised upper reference).
"""
from __future__ import annotations

from ..runtime import Profile

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

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        self.n_clusters, self.seed, self.params = n_clusters, seed, params

    @classmethod
    def for_profile(cls, n_clusters: int, profile: Profile, seed: int = 0, **options) -> "Method":
        """The method with its profile's preset hyperparameters, overridden by `options`."""
        params = {**cls.presets.get(profile.name, {}), **options}
        return cls(n_clusters, seed=seed, **params)

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
