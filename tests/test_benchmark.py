import json
import subprocess
import sys

import pytest

from course_lib import benchmark
from course_lib.methods import available, get_method


def test_registry_has_the_foundation_methods():
    assert {"supervised-cnn", "pixels-kmeans"} <= set(available())
    with pytest.raises(ValueError, match="registered methods are"):
        get_method("no-such-method")


def test_benchmark_command_writes_the_promised_json(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "course_lib", "benchmark", "--method", "pixels-kmeans", "--dataset", "digits",
           "--test", "digits", "--profile", "quick", "--seed", "3", "--option", "centre_crop=1.0",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("profile: quick")
    r = json.loads(out.read_text())
    for key in ("method", "dataset", "test_dataset", "profile", "seed", "n_train", "n_eval", "k", "acc", "nmi",
                "ari", "seconds", "backend", "device", "versions", "date"):
        assert key in r, key
    assert (r["method"], r["test_dataset"], r["profile"], r["seed"], r["k"]) == ("pixels-kmeans", "digits",
                                                                                 "quick", 3, 10)
    assert r["n_train"] == 1437 and r["n_eval"] == 360 and r["params"]["centre_crop"] == 1.0
    assert r["acc"] > 0.5  # real handwritten digits: raw-pixel KMeans is far above chance (0.1)


def test_a_run_with_options_gets_its_own_row_named_by_them(tmp_path):
    """Options set on top of the preset are part of what ran: the report never averages them with the default."""
    folder = tmp_path / "digits-quick"
    for options in ({}, {"pca_dim": 20}):
        for seed in (0, 1):
            benchmark.run("pixels-kmeans", "digits", profile="quick", seed=seed, options=options, verbose=False,
                          out=folder / f"pixels-kmeans{'-pca20' if options else ''}-seed{seed}.json")
    summary = benchmark.report(folder)
    labels = sorted(r["label"] for r in summary["summary"])
    assert labels == ["pixels-kmeans", "pixels-kmeans (pca_dim=20)"]
    assert all(len(r["seeds"]) == 2 for r in summary["summary"])
    assert "| pixels-kmeans (pca_dim=20) |" in (tmp_path / "digits-quick.md").read_text()
    assert set(benchmark.summary_rows(summary, ["pixels-kmeans"])) == {"pixels-kmeans"}


def test_pixels_kmeans_on_real_gtsrb_is_above_the_bar(shared_data):
    r = benchmark.run("pixels-kmeans", f"npz:{shared_data / 'gtsrb_train_32.npz'}", profile="standard",
                      verbose=False)
    assert r["n_eval"] == 39209 and r["acc"] >= 0.30 and r["nmi"] > 0.4


def test_supervised_needs_labels_and_is_scored_on_a_holdout():
    r = benchmark.run("supervised-cnn", "digits", profile="quick", options={"epochs": 4}, verbose=False)
    assert r["protocol"].startswith("track-wise hold-out") and r["n_eval"] < r["n_train"]
    assert r["acc"] > 0.8
    with pytest.raises(ValueError, match="needs labels"):
        get_method("supervised-cnn")(10).fit(__import__("numpy").zeros((4, 8, 8, 1)))


def test_published_results_are_found_beside_the_library_or_fetched_with_their_index(tmp_path, monkeypatch):
    from course_lib import benchmark

    monkeypatch.delenv("COURSE_RESULTS", raising=False)
    here = benchmark.published_results()
    assert (here / "index.json").is_file() and (here / "gtsrb-standard.json").is_file()  # this checkout
    index = json.loads((here / "index.json").read_text())["files"]
    assert "gtsrb-standard.json" in index and "index.json" not in index
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path))
    assert benchmark.published_results() == tmp_path
    fetched = benchmark.fetch_results(here.as_uri(), tmp_path / "copy")  # a repository's results/, by URL
    assert sorted(p.name for p in fetched.iterdir()) == sorted(index + ["index.json"])
    assert json.loads((fetched / "gtsrb-standard.json").read_text())["name"] == "gtsrb-standard"
    with pytest.raises(ConnectionError, match="Offline"):  # no network here: a clear message, not a traceback
        benchmark.fetch_results("https://raw.githubusercontent.com/no-such-owner/no-such-repo/main/results",
                                tmp_path / "offline")
