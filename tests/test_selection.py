import json

import numpy as np
import pytest

from course_lib import metrics, selection


def test_settings_are_every_combination_of_the_grid():
    assert selection.settings({"a": [1, 2], "b": [5]}) == [{"a": 1, "b": 5}, {"a": 2, "b": 5}]


def test_a_study_picks_the_most_stable_setting_writes_the_table_and_resumes(tmp_path, monkeypatch):
    grid = {"pca_dim": [2, 32]}
    s = selection.study("hog-kmeans", "digits", grid, seeds=2, profile="quick", out_dir=tmp_path, name="sel")
    rows = s["rows"]
    assert [r["setting"] for r in rows] == selection.settings(grid)
    assert s["chosen"] == max(rows, key=lambda r: r["stability"])["setting"]  # no labels in the choice
    assert all(r["clusters_used"] == 10 for r in rows) and "clusters used (of 10)" in (tmp_path / "sel.md").read_text()
    assert s["best_by_acc"] == max(rows, key=lambda r: r["acc"])["setting"]
    run = json.loads((tmp_path / "sel" / "pca_dim=32-seed1.json").read_text())
    assert len(run["predictions"]) == s["n_eval"] and run["options"] == {"pca_dim": 32}
    assert rows[1]["acc"] > 0.5  # HOG + KMeans on real digits; chance 0.1
    assert "| **" in (tmp_path / "sel.md").read_text()

    def refit(*a, **k):
        raise AssertionError("a finished run was fitted again")

    monkeypatch.setattr(selection, "fit_one", refit)
    again = selection.study("hog-kmeans", "digits", grid, seeds=2, profile="quick", out_dir=tmp_path, name="sel")
    assert again["rows"] == rows


def test_the_rule_passes_over_a_more_stable_setting_that_leaves_clusters_empty():
    rows = [{"stability": 0.69, "clusters_used": 35}, {"stability": 0.68, "clusters_used": 43},
            {"stability": 0.60, "clusters_used": 43}]
    assert selection.choose(rows, 43) == 1
    assert selection.choose([{"stability": 0.5, "clusters_used": 9}, {"stability": 0.7, "clusters_used": 8}], 10) == 1


def test_a_setting_reports_the_fewest_clusters_any_seed_used():
    y = np.arange(40) % 4
    runs = [{"seed": 0, "predictions": y.tolist(), "cpu_seconds": 1.0},
            {"seed": 1, "predictions": (y % 3).tolist(), "cpu_seconds": 1.0}]
    assert selection.summarise_setting(runs, y)["clusters_used"] == 3


def test_stability_needs_two_seeds():
    with pytest.raises(ValueError, match="--seeds 2"):
        selection.study("hog-kmeans", "digits", {"pca_dim": [8]}, seeds=1, profile="quick")


def test_identical_clusterings_are_perfectly_stable():
    y = np.arange(30) % 3
    assert metrics.stability([y, (y + 1) % 3]) == pytest.approx(1.0)


def test_a_study_with_holdout_chooses_on_the_part_a_holdout_run_fits_on(tmp_path):
    s = selection.study("hog-kmeans", "digits", {"pca_dim": [16]}, seeds=2, profile="quick", out_dir=tmp_path,
                        holdout=0.25)
    assert s["n_eval"] == s["n_train"] < 1437 and "hold-out run fits on" in s["protocol"]
