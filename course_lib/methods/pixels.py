"""Clustering raw pixels: the first baseline every deep method must beat."""
from __future__ import annotations

import time

from ..clustering import FeatureClusterer, pixel_features
from . import Method, register


class FeatureKMeans(Method):
    """features(x) -> PCA (whitened) -> L2 -> clustering. Subclasses define `features` and `defaults`."""

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        p = self.params
        self.clusterer = FeatureClusterer(n_clusters, p["pca_dim"], p["whiten"], p["l2"], p["algorithm"],
                                          p["n_init"], seed)

    def features(self, x):
        raise NotImplementedError

    def fit(self, x, y=None):
        t0 = time.perf_counter()
        f = self.features(x)
        self.timings_ = {**getattr(self, "timings_", {}), "features": time.perf_counter() - t0}
        self.clusterer.fit(f)
        self._keep_fitted(x, f)
        self.timings_.update(self.clusterer.timings_)  # seconds per stage: features, pca+l2, clustering
        self.labels_ = self.clusterer.labels_
        return self

    def predict(self, x):
        return self.clusterer.predict(self._features_of(x, self.features))


@register
class PixelsKMeans(FeatureKMeans):
    """Pixels (centre crop, per-image standardisation) -> PCA (whitened) -> L2 -> KMeans.

    The defaults are the best preprocessing measured on GTSRB; `centre_crop=1, standardise=False,
    whiten=False, l2=False` gives plain raw-pixel KMeans.
    """

    name = "pixels-kmeans"
    defaults = dict(centre_crop=0.75, standardise=True, pca_dim=50, whiten=True, l2=True,
                    algorithm="kmeans", n_init=10)

    def features(self, x):
        return pixel_features(x, self.params["centre_crop"], self.params["standardise"])
