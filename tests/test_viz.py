"""course_lib.viz: every figure function returns a Figure with the expected axes and images (Agg, tiny inputs)."""
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib import viz  # noqa: E402

NAMES = ["Speed limit (20km/h)", "No passing for vehicles over 3.5 metric tons", "Stop", "Yield"]


def _images(n, c=3, side=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, c), dtype=np.uint8)


def _n_images(fig):
    return sum(len(ax.images) for ax in fig.axes)


def _renders(fig):
    fig.savefig(io.BytesIO(), format="png", dpi=30)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_one_axis_per_image(channels):
    x = _images(7, channels)
    fig = viz.image_grid(x, labels=[0, 1, 2, 3, 0, 1, 2], class_names=NAMES, n_cols=3, title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 7 and _n_images(fig) == 7
    assert fig.axes[1].get_title().startswith("No passing")
    if channels == 1:
        assert fig.axes[0].images[0].get_array().ndim == 2  # grey images drawn as 2-D arrays
    _renders(fig)


def test_image_grid_titles_override_labels():
    fig = viz.image_grid(_images(3), labels=[0, 1, 2], titles=["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]


def test_class_grid_one_tile_per_class_and_missing_class():
    x, y = _images(6), np.array([0, 0, 1, 1, 2, 2])  # class 3 has no image
    fig = viz.class_grid(x, y, NAMES, per_class=1, n_cols=3)
    assert len(fig.axes) == 4 and _n_images(fig) == 4
    assert any(t.get_text() == "none" for t in fig.axes[3].texts)
    _renders(fig)


def test_class_grid_rows_per_class():
    x, y = _images(12), np.repeat(np.arange(4), 3)
    fig = viz.class_grid(x, y, NAMES, per_class=2)
    assert len(fig.axes) == 8 and _n_images(fig) == 8
    assert fig.axes[0].get_ylabel().startswith("0:")


def test_cluster_grid_rows_sorted_by_size():
    x = _images(10, 1)
    clusters = np.array([5, 5, 5, 5, 2, 2, 2, 9, 9, 7])
    y = np.array([0, 0, 0, 1, 2, 2, 2, 3, 3, 3])
    fig = viz.cluster_grid(x, clusters, n_clusters_shown=3, per_cluster=3, y=y, class_names=NAMES)
    assert len(fig.axes) == 9
    assert _n_images(fig) == 3 + 3 + 2  # the third-largest cluster (9) has 2 members
    labels = [fig.axes[i].get_ylabel() for i in (0, 3, 6)]
    assert labels[0].startswith("cluster 5") and "n=4" in labels[0] and "75%" in labels[0]
    assert labels[1].startswith("cluster 2") and labels[2].startswith("cluster 9")
    _renders(fig)


def test_class_histogram_bar_per_class():
    y = np.array([0, 0, 0, 1, 2, 2])
    fig = viz.class_histogram(y, NAMES)
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == [3, 1, 2, 0]
    assert len(ax.get_xticks()) == 4


@pytest.mark.parametrize("n", [3, 43])
def test_confusion_heatmap_ticks_every_class(n):
    cm = np.diag(np.arange(1, n + 1)) + 1
    fig = viz.confusion_heatmap(cm, class_names=(NAMES * 11)[:n])
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the heat map and its colour bar
    assert len(ax.get_xticklabels()) == n and len(ax.get_yticklabels()) == n
    data = ax.collections[0].get_array().reshape(n, n)
    np.testing.assert_allclose(data.sum(axis=1), 1.0)  # rows normalised
    assert (len(ax.texts) == n * n) == (n <= 12)  # numbers in the cells only for few classes
    _renders(fig)


def test_confusion_heatmap_counts():
    fig = viz.confusion_heatmap(np.array([[2, 1], [0, 3]]), normalize=False)
    assert fig.axes[0].collections[0].get_array().max() == 3


def test_training_curves_one_axis_per_family():
    h = {"loss": [2.0, 1.0, 0.5], "accuracy": [0.3, 0.6, 0.8], "val_loss": [2.1, 1.2, 0.9],
         "val_accuracy": [0.2, 0.5, 0.7], "seconds": [1.0, 1.1, 1.0]}
    fig = viz.training_curves(h)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert all(len(ax.lines) == 2 for ax in fig.axes)  # train + validation
    _renders(fig)


def test_training_curves_overlays_named_runs():
    h1 = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.9], "seconds": [2.0, 2.0]}
    h2 = {"loss": [1.5, 0.7], "accuracy": [0.4, 0.8]}
    fig = viz.training_curves({"seed": h1, "small": h2})
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "seed (2.0 s/epoch)" and legend[1] == "small"


def test_cluster_size_bars_sorted_with_classes():
    y_pred = np.array([3, 3, 3, 3, 0, 0, 1])
    fig = viz.cluster_size_bars(y_pred, y_true=np.array([0, 0, 1, 1, 2, 2, 2]))
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == [4, 2, 1, 0]  # cluster 2 is empty
    assert len(ax.lines) == 1  # the class-size step line
    assert "57%" in ax.get_title()
    _renders(fig)


def test_figures_draw_themselves_in_jupyter():
    png = viz.class_histogram(np.array([0, 1, 1]))._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
