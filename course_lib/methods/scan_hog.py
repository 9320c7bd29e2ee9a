"""`scan-hog`: SCAN's mining, SCAN loss and self-labeling on HOG descriptors, a CPU stand-in, not the paper.

No pretext network is learned: the neighbours are mined in HOG space (PCA-64 whitened, L2) and the clustering
network is an MLP on those frozen descriptors, and on those of `views` strongly augmented copies of each image
(described once; the SCAN step pairs random views). Self-labeling (`selflabel.self_label`) fine-tunes that MLP
on the frozen descriptors of the images, the encoder's feature noise and dropout as augmentation. With
`student="cnn"` the final clustering is then distilled into a fresh CNN on the pixels (issue 20), and with
`student_finetune` that CNN is trained end to end with the SCAN loss (`scan-hog+cnn` does both). Its numbers
are `scan-hog`'s, never `scan`'s.
"""
from __future__ import annotations

import time

import keras
import numpy as np

from .. import augment
from . import register
from ..clustering import JointPipeline
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
                # ae_weight > 0: the codes of a convolutional autoencoder trained on the images for ae_epochs
                # (`autoencoder-kmeans`'s network; it reconstructs the colour HOG drops) joined to the HOG, each
                # part PCA-64 whitened and L2, the codes scaled by ae_weight (issue 20); no colour jitter then.
                # Off: `select` picks 0.5, but its clusters split classes by brightness and score lower on
                # unseen signs (results/NOTES.md)
                "ae_weight": 0.0, "ae_epochs": 4,
                "hog_cell": 4,  # HOG cell size in pixels (4: 6 x 6 blocks of a 28-pixel crop; 8: coarser shapes)
                # centre_cell > 0: a second HOG, of the central half of the image (16 x 16 pixels of 32) with cells
                # of centre_cell pixels, joined to the HOG at equal weight (each part PCA-64 whitened, L2): the
                # pictogram inside the rim (a speed limit's digits) at finer cells than the whole sign's (issue 20)
                "centre_cell": 0,
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
    smoke = {**{k: v for k, v in SCAN.smoke.items() if k != "pretext_epochs"}, "ae_epochs": 1}
    pretexts = ("hog",)
    selflabel_on_images = False  # the MLP reads frozen descriptors

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **params)
        if int(self.params["centre_cell"]) < 0 or (int(self.params["centre_cell"]) and self.params["ae_weight"]):
            raise ValueError(f"centre_cell (the cell size of a second HOG, of the image's central half) must be 0 "
                             f"(off) or > 0, and not with ae_weight; got centre_cell={self.params['centre_cell']}, "
                             f"ae_weight={self.params['ae_weight']}")
        if float(self.params["ae_weight"]) < 0:
            raise ValueError(f"ae_weight (the autoencoder codes' weight beside the HOG) must be >= 0 (0: HOG alone), "
                             f"got {self.params['ae_weight']}")
        self.autoencoder_ = None

    def pretext(self, x):
        """Step 1: HOG descriptors of x and of `views` augmented copies, whitened, L2 (with ae_weight, joined to the
        codes of an autoencoder trained on x: the only learning in this step)."""
        t0 = time.perf_counter()
        self.backbone_ = None
        self.autoencoder_ = self._autoencoder(x) if self.params["ae_weight"] else None
        self._image_shape = x.shape[1:]
        self._describe_all(x, pca_dim=64, whiten=True)
        self.log_["pretext_seconds"] = time.perf_counter() - t0
        return self.pretext_features_

    def _autoencoder(self, x):
        """The convolutional autoencoder of `autoencoder-kmeans`, trained (MSE, no labels) on x for ae_epochs;
        cached in cache_dir when one is given (else checkpointed as that method is, e.g. on Colab)."""
        from .embeddings import AutoencoderKMeans

        t0 = time.perf_counter()
        cache = self._cache(x, "autoencoder", ("ae_epochs",))
        ae = AutoencoderKMeans(self.n_clusters, self.seed, epochs=int(self.params["ae_epochs"]),
                               checkpoint_dir=None if cache is None else str(cache), verbose=self.params["verbose"])
        ae.train(x)
        self.log_["autoencoder_seconds"] = time.perf_counter() - t0
        return ae

    def _describe(self, x):
        hue = self.params["hue_bins"] if x.shape[-1] == 3 else 0
        x = np.asarray(x)
        hog = hog_features(x, border=2 if x.shape[1] >= 28 else 0, cell=int(self.params["hog_cell"]),
                           hue_bins=hue, colour_weight=self.params["colour_weight"] if hue else None)
        if self.params["centre_cell"]:
            return np.concatenate([hog, self._centre_hog(x)], axis=1)
        if self.autoencoder_ is None:
            return hog
        return np.concatenate([hog, self.autoencoder_.embed(x)], axis=1)

    def _centre_hog(self, x):
        """HOG of the central half of each image (rows and columns h/4 .. 3h/4) with centre_cell-pixel cells."""
        h, w = x.shape[1:3]
        return hog_features(x[:, h // 4:h - h // 4, w // 4:w - w // 4], border=0, cell=int(self.params["centre_cell"]))

    def _pipeline(self, pca_dim, whiten):
        if self.params["centre_cell"]:
            return JointPipeline(self._centre_dim, 1.0, pca_dim, whiten, self.seed)
        if self.autoencoder_ is None:
            return super()._pipeline(pca_dim, whiten)
        return JointPipeline(self.autoencoder_.params["code_dim"], self.params["ae_weight"], pca_dim, whiten, self.seed)

    @property
    def _centre_dim(self) -> int:
        """Columns of the central HOG (the tail of `_describe`'s rows)."""
        return self._centre_hog(np.zeros((1, *self._image_shape), np.uint8)).shape[1]

    def _augmenter(self, x, seed=0):
        """SCAN's strong views; with colour in the descriptor (hue histograms, the autoencoder's codes), no colour
        jitter (it would move the colour the descriptor reads)."""
        colour = x.shape[-1] == 3 and not self.params["hue_bins"] and not self.params["ae_weight"]
        return augment.strong_augmenter(colour=colour, seed=self.seed + seed, blur=float(self.params["blur"]))

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
    CNN sees what HOG throws away (colour, the pictogram inside the rim) and predicts new images from pixels;
    then the CNN is trained end to end with the SCAN loss on neighbours mined in HOG + its own features; last, the
    pairs of clusters that are halves of one group by their neighbour links are joined."""

    name = "scan-hog+cnn"
    # student_finetune=3: then the student's network trained end to end with the SCAN loss for 3 epochs, chosen
    # without labels by `select` (results/gtsrb-selection-scan-hog-cnn-finetune.md); runs before 2026-12-05 ran
    # without it and are labelled student_finetune=0.
    # blur=0.5 (half the strong views blurred), chosen by `select` (results/gtsrb-selection-scan-hog-cnn-blur.md),
    # and merge_pairs (the closed pairs of the final clusters joined; parameter-free, results/NOTES.md), both since
    # 2026-12-06; earlier runs are labelled blur=0.0, merge_pairs=False.
    # centre_cell=2 (the central half's finer HOG joined to the HOG), chosen by `select`
    # (results/gtsrb-selection-scan-hog-cnn-centre.md), since 2026-12-07; earlier runs are labelled centre_cell=0
    presets = {name: dict(preset, student="cnn", student_finetune=3, blur=0.5, merge_pairs=True, centre_cell=2)
               for name, preset in ScanHog.presets.items()}
    presets["quick"].update(student_epochs=5)  # quick: a few epochs on 3,000 images
    smoke = dict(ScanHog.smoke, student_epochs=1, student_rounds=1, student_finetune=1)
