import csv

import numpy as np
import pytest
from PIL import Image

from course_lib import data
from course_lib.data import DatasetError, LayoutError, load_dataset


def _png(path, colour=(200, 30, 30), size=(30, 28)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _kaggle_layout(root, n_classes=3, per_class=4):
    rows = []
    for c in range(n_classes):
        for t in range(per_class):
            rel = f"Train/{c}/{c:05d}_{t // 2:05d}_{t % 2:05d}.png"
            _png(root / rel, (40 * c, 100, 20 * t))
            rows.append(dict(Width=30, Height=28, **{"Roi.X1": 5, "Roi.Y1": 5, "Roi.X2": 24, "Roi.Y2": 22},
                             ClassId=c, Path=rel))
    with open(root / "Train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_real_kaggle_layout_sample(shared_data):
    ds = load_dataset(f"gtsrb:{shared_data / 'gtsrb_kaggle_layout_sample'}", "train", image_size=32)
    assert ds.x.shape == (215, 32, 32, 3) and ds.x.dtype == np.uint8
    assert set(ds.y) == set(range(43)) and ds.info["layout"] == "kaggle"
    assert ds.class_names[14] == "Stop" and len(np.unique(ds.groups)) == 215  # one frame per track
    test = load_dataset(f"gtsrb:{shared_data / 'gtsrb_kaggle_layout_sample'}", "test", image_size=32)
    assert len(test) == 200 and test.y.max() <= 42
    roi = load_dataset(f"gtsrb:{shared_data / 'gtsrb_kaggle_layout_sample'}", "train", image_size=32,
                       roi_crop=True)
    assert roi.x.shape == ds.x.shape and not np.array_equal(roi.x, ds.x)


def test_kaggle_layout_written_here_keeps_tracks_and_is_cached(tmp_path):
    _kaggle_layout(tmp_path / "gtsrb")
    ds = load_dataset(f"gtsrb:{tmp_path / 'gtsrb'}", "train", image_size=16)
    assert ds.x.shape == (12, 16, 16, 3) and list(np.bincount(ds.y)) == [4, 4, 4]
    assert len(np.unique(ds.groups)) == 6  # 2 tracks x 3 classes
    again = load_dataset(f"gtsrb:{tmp_path / 'gtsrb'}", "train", image_size=16)
    assert "cache" in again.info and np.array_equal(again.x, ds.x) and np.array_equal(again.groups, ds.groups)


def test_official_layout(tmp_path):
    root = tmp_path / "GTSRB"
    for c in range(2):
        folder = root / "Final_Training" / "Images" / f"{c:05d}"
        lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for t in range(3):
            name = f"{t:05d}_00000.ppm"
            _png(folder / name, (100 * c, 50, 50))
            lines.append(f"{name};30;28;2;2;27;25;{c}")
        (folder / f"GT-{c:05d}.csv").write_text("\n".join(lines) + "\n")
    test_dir = root / "Final_Test" / "Images"
    _png(test_dir / "00000.ppm")
    (test_dir / "GT-final_test.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                                                 "00000.ppm;30;28;2;2;27;25;1\n")
    ds = load_dataset(f"gtsrb:{tmp_path}", "train", image_size=32, cache=False)  # found one level down
    assert ds.info["layout"] == "official" and list(ds.y) == [0, 0, 0, 1, 1, 1]
    assert list(load_dataset(f"gtsrb:{tmp_path}", "test", cache=False).y) == [1]


def test_corrupt_png_is_skipped_counted_and_warned(tmp_path):
    _kaggle_layout(tmp_path / "g")
    (tmp_path / "g" / "Train" / "1" / "00001_00000_00000.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        ds = load_dataset(f"gtsrb:{tmp_path / 'g'}", "train", cache=False)
    assert len(ds) == 11 and ds.n_skipped == 1


def test_unknown_layout_lists_the_expected_ones(tmp_path):
    (tmp_path / "weird" / "images").mkdir(parents=True)
    _png(tmp_path / "weird" / "images" / "a.png")
    with pytest.raises(LayoutError) as e:
        load_dataset(f"gtsrb:{tmp_path / 'weird'}", cache=False)
    assert "Kaggle:" in str(e.value) and "Final_Training" in str(e.value)


def test_npz_concatenates_and_never_unpickles(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, x=np.zeros((4, 8, 8, 1), np.uint8), y=np.array([0, 0, 1, 1]))
    np.savez(b, x=np.ones((2, 8, 8, 1), np.uint8), y=np.array([2, 2]))
    ds = load_dataset(f"npz:{a},{b}")
    assert ds.x.shape == (6, 8, 8, 1) and list(ds.y) == [0, 0, 1, 1, 2, 2]
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_dataset(f"npz:{tmp_path / 'evil.npz'}")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


def test_real_gtsrb_npz_tracks_and_track_split(shared_data):
    ds = load_dataset(f"npz:{shared_data / 'gtsrb_train_32.npz'}")
    assert ds.x.shape == (39209, 32, 32, 3) and ds.n_classes == 43
    assert len(np.unique(ds.groups)) == 1307  # 39,209 frames in tracks of 30 (one of 29)
    train, test = data.track_split(ds, 0.2, seed=0)
    assert not set(train.groups) & set(test.groups)
    assert 0.17 < len(test) / len(ds) < 0.23


def test_contiguous_tracks_cut_runs_into_blocks():
    y = np.array([5] * 65 + [2] * 30)
    g = data.contiguous_tracks(y, 30)
    assert len(np.unique(g[:65])) == 3 and len(np.unique(g[65:])) == 1 and g[0] == g[29] != g[30]


def _gtsrb_like(rng, shuffle=False):
    y = np.repeat(np.arange(43), 60)  # every class: two tracks of 30 frames, stored track by track
    return rng.permutation(y) if shuffle else y


def test_npz_tracks_only_where_the_data_has_tracks(tmp_path):
    rng = np.random.default_rng(0)
    x = lambda n: np.zeros((n, 4, 4, 1), np.uint8)  # noqa: E731
    np.savez(tmp_path / "gtsrb.npz", x=x(43 * 60), y=_gtsrb_like(rng))
    np.savez(tmp_path / "mnist.npz", x=x(600), y=rng.integers(0, 10, 600))  # MNIST's order: no runs
    np.savez(tmp_path / "sorted10.npz", x=x(600), y=np.repeat(np.arange(10), 60))  # sorted, but no tracks
    np.savez(tmp_path / "shuffled.npz", x=x(43 * 60), y=_gtsrb_like(rng, shuffle=True))
    np.savez(tmp_path / "given.npz", x=x(6), y=np.array([0, 0, 1, 1, 2, 2]), groups=np.array([7, 7, 7, 9, 9, 9]))
    gtsrb = load_dataset(f"npz:{tmp_path / 'gtsrb.npz'}")
    assert len(np.unique(gtsrb.groups)) == 86 and gtsrb.groups[0] == gtsrb.groups[29] != gtsrb.groups[30]
    for name in ("mnist", "sorted10", "shuffled"):
        assert load_dataset(f"npz:{tmp_path / name}.npz").groups is None, name
    assert list(load_dataset(f"npz:{tmp_path / 'given.npz'}").groups) == [0, 0, 0, 1, 1, 1]
    both = load_dataset(f"npz:{tmp_path / 'given.npz'},{tmp_path / 'mnist.npz'}")
    assert len(np.unique(both.groups)) == 2 + 600  # MNIST's images: one group each, none shared with given.npz


def test_real_mnist_npz_has_no_tracks(shared_data):
    assert load_dataset(f"npz:{shared_data / 'mnist_test.npz'}").groups is None


def test_builtin_digits_and_subsampling():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert tr.x.shape[1:] == (32, 32, 1) and len(tr) + len(te) == 1797 and tr.x.max() == 255
    sub = load_dataset("digits", "train", max_images=300, seed=1)
    assert len(sub) == 300 and np.bincount(sub.y).min() >= 25  # stratified
    assert np.array_equal(sub.x, load_dataset("digits", "train", max_images=300, seed=1).x)


def test_unknown_names_and_splits_are_explained():
    with pytest.raises(DatasetError, match="Known: gtsrb"):
        load_dataset("imagenet-21k")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("digits", "validation")
