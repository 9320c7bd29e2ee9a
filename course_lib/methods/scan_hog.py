"""`scan-hog`: SCAN's mining, SCAN loss and self-labeling on HOG descriptors, a CPU stand-in, not the paper.

No pretext network is learned: the neighbours are mined in HOG space (PCA-64 whitened, L2) and the clustering
network is an MLP on those frozen descriptors, and on those of `views` strongly augmented copies of each image
(described once; the SCAN step pairs random views). Self-labeling (`selflabel.self_label`) fine-tunes that MLP
on the frozen descriptors of the images, the encoder's feature noise and dropout as augmentation. With
`student="cnn"` the final clustering is then distilled into a fresh CNN on the pixels (issue 20). Its numbers
are `scan-hog`'s, never `scan`'s.
"""
from __future__ import annotations

import time

import keras
import numpy as np

from .. import augment
from . import register
from .features import hog_features
from .scan import SCAN, copy_model


@register
class ScanHog(SCAN):
    """HOG (+ augmented views) -> mine K neighbours -> SCAN loss on an MLP -> self-labeling [-> CNN student]."""

    name = "scan-hog"
    # hue_bins: saturation-weighted hue histograms appended to the HOG (colour images), scaled to colour_weight
    # times the HOG's length; the augmented views then change brightness and contrast, not hue
    defaults = {**{k: v for k, v in SCAN.defaults.items()
                   if k not in ("pretext", "pretext_epochs", "width", "temperature", "end_to_end")},
                "hue_bins": 0, "colour_weight": 0.5,
                "hog_cell": 4,  # HOG cell size in pixels (4: 6 x 6 blocks of a 28-pixel crop; 8: coarser shapes)
                # chosen without labels (stability across seeds, `select`): 2 on digits and on GTSRB's training
                # part, against 5 (results/digits-selection-scan-hog.md, gtsrb-selection-scan-hog.md) and against 1
                # (which leaves clusters empty: gtsrb-selection-scan-hog-weight.md)
                "entropy_weight": 2.0}
    presets = {
        "quick": dict(scan_epochs=60, selflabel_rounds=2, selflabel_epochs=2),
        # self-labeling loops while the confident set grows (Algorithm 1); 40 rounds is only a cap
        "standard": dict(views=4, scan_epochs=40, selflabel_rounds=40, selflabel_epochs=5),
        "full": dict(views=4, scan_epochs=100, selflabel_rounds=40, selflabel_epochs=5),
    }
    smoke = {k: v for k, v in SCAN.smoke.items() if k != "pretext_epochs"}
    pretexts = ("hog",)
    selflabel_on_images = False  # the MLP reads frozen descriptors

    def pretext(self, x):
        """Step 1, without learning: HOG descriptors of x and of `views` augmented copies, whitened, L2."""
        t0 = time.perf_counter()
        self.backbone_ = None
        self._describe_all(x, pca_dim=64, whiten=True)
        self.log_["pretext_seconds"] = time.perf_counter() - t0
        return self.pretext_features_

    def _describe(self, x):
        hue = self.params["hue_bins"] if x.shape[-1] == 3 else 0
        return hog_features(np.asarray(x), border=2 if x.shape[1] >= 28 else 0, cell=int(self.params["hog_cell"]),
                            hue_bins=hue, colour_weight=self.params["colour_weight"] if hue else None)

    def _augmenter(self, x, seed=0):
        """SCAN's strong views; with hue histograms in the descriptor, no colour jitter (it would move the hue)."""
        colour = x.shape[-1] == 3 and not self.params["hue_bins"]
        return augment.strong_augmenter(colour=colour, seed=self.seed + seed)

    def _end_to_end(self) -> bool:
        return False

    def _selflabel_inputs(self, x):
        return self.features(x)

    def selflabel_network(self, x):
        """A copy of the SCAN step's MLP and kept head, on the frozen descriptors."""
        encoder = copy_model(self.scan_model_.encoder)
        head = self.kept_head()
        model = keras.Sequential([keras.Input(encoder.input_shape[1:]), encoder, *head], name="selflabel")
        self.copy_kept_head(head)
        model.compile(keras.optimizers.Adam(self.params["learning_rate"]), "sparse_categorical_crossentropy")
        return model


@register
class ScanHogCNN(ScanHog):
    """`scan-hog`, then its final clustering distilled into a fresh CNN on the pixels (`student="cnn"`): the
    CNN sees what HOG throws away (colour, the pictogram inside the rim) and predicts new images from pixels."""

    name = "scan-hog+cnn"
    presets = {name: dict(preset, student="cnn") for name, preset in ScanHog.presets.items()}
    presets["quick"].update(student_epochs=5)  # quick: a few epochs on 3,000 images
    smoke = dict(ScanHog.smoke, student_epochs=1, student_rounds=1)
