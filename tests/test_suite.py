"""The comparison suite (`benchmark --all --seeds N`), resuming a killed training run, determinism."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from course_lib import benchmark, data, runtime
from course_lib.methods import get_method

ROOT = Path(__file__).resolve().parents[1]


def test_suite_names_follow_the_dataset_and_profile():
    assert benchmark.suite_name("npz:../shared/data/gtsrb_train_32.npz", "standard") == "gtsrb-standard"
    assert benchmark.suite_name("npz:../shared/data/mnist_train.npz", "standard",
                                test="npz:../shared/data/mnist_test.npz") == "mnist-standard"
    assert benchmark.suite_name("synthetic-signs", "quick") == "synthetic-signs-quick"
    assert benchmark.suite_name("digits", "quick", test="synthetic-signs") == "digits-synthetic-signs-quick"


def test_suite_runs_every_method_and_seed_summarises_and_resumes(tmp_path, capsys):
    kw = dict(test="digits", profile="quick", methods=["pixels-kmeans", "hog-kmeans"], out_dir=tmp_path)
    runs = benchmark.run_all("digits", seeds=2, **kw)
    folder = tmp_path / "digits-quick"
    assert sorted(p.name for p in folder.glob("*.json")) == [
        "hog-kmeans-seed0.json", "hog-kmeans-seed1.json", "pixels-kmeans-seed0.json", "pixels-kmeans-seed1.json"]
    assert len(runs) == 4
    summary = json.loads((tmp_path / "digits-quick.json").read_text())
    rows = {r["method"]: r for r in summary["summary"]}
    for m in ("pixels-kmeans", "hog-kmeans"):
        accs = [r["acc"] for r in runs if r["method"] == m]
        assert rows[m]["seeds"] == [0, 1] and np.isclose(rows[m]["acc"], np.mean(accs))
        assert np.isclose(rows[m]["acc_std"], np.std(accs))
        assert rows[m]["acc"] > 0.5  # real handwritten digits, far above chance
    md = (tmp_path / "digits-quick.md").read_text()
    assert "± " in md and "| hog-kmeans" in md and "python -m course_lib report" in md
    assert (tmp_path / "digits-quick-scores.png").stat().st_size > 1000
    assert (tmp_path / "digits-quick-time.png").stat().st_size > 1000
    # an interrupted suite resumes: finished runs are read back, not rerun
    (folder / "hog-kmeans-seed1.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    capsys.readouterr()
    benchmark.run_all("digits", seeds=2, **kw)
    out = capsys.readouterr().out
    assert out.count("done earlier") == 3 and "hog-kmeans seed 1: running" in out
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert (folder / "hog-kmeans-seed1.json").is_file()


def test_suite_command_line(tmp_path):
    cmd = [sys.executable, "-m", "course_lib", "benchmark", "--all", "--methods", "pixels-kmeans",
           "--dataset", "digits", "--profile", "quick", "--seeds", "2", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("profile: quick")
    assert "| pixels-kmeans | " in proc.stdout and (tmp_path / "digits-quick.json").is_file()


def test_same_seed_and_profile_give_identical_predictions():
    x = data.load_dataset("digits", "train", max_images=400, seed=0).x

    def once():
        runtime.setup(0, "quick", verbose=False)
        m = get_method("autoencoder-kmeans")(10, seed=0, epochs=2, width=8, code_dim=16, n_init=2).fit(x)
        return m.labels_, m.embed(x[:50])

    (labels_a, emb_a), (labels_b, emb_b) = once(), once()
    assert np.array_equal(labels_a, labels_b)
    assert np.array_equal(emb_a, emb_b)  # bit for bit, not just the same clustering


def test_a_killed_training_run_resumes_and_finishes_all_its_epochs(tmp_path):
    """SIGKILL a supervised run after its first checkpoint; the same command then finishes the remaining epochs."""
    out, ckpt = tmp_path / "r.json", tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "course_lib", "benchmark", "--method", "supervised-cnn", "--dataset",
           "synthetic-signs", "--profile", "quick", "--option", "epochs=4", "--option", f"checkpoint_dir={ckpt}",
           "--out", str(out)]
    env = {**os.environ, "COURSE_PROFILE": "quick", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    meta = ckpt / "training_metadata.json"
    deadline = time.time() + 600
    while not meta.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before its first checkpoint: make its epochs longer"
    proc.send_signal(signal.SIGKILL)  # mid-training, as a cut-off Colab/Kaggle session
    proc.wait()
    assert not out.exists()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(out.read_text())["log"]
    ran = log["epochs_run_now"]
    assert log["resumed_after_epoch"] is not None and ran[0] >= 1  # it did not start over
    assert ran == list(range(ran[0], 4))  # and it finished every remaining epoch, no more
    assert json.loads(out.read_text())["acc"] > 1 / 43


def test_the_report_shows_each_step_and_the_fitted_images_of_multi_step_runs(tmp_path):
    from course_lib.benchmark import report, steps_table

    def run(seed, acc, fitted, steps):
        return {"method": "scan-hog+cnn", "dataset": "d", "profile": "quick", "seed": seed, "acc": acc, "nmi": 0.5,
                "ari": 0.4, "seconds": 10.0, "cpu_seconds": 12.0, "fitted": {"acc": fitted, "nmi": 0.6},
                "steps": {"scan": {"acc": steps[0]}, "student": {"acc": steps[1]}},
                "log": {"scan_seconds": 4.0, "student_seconds": 6.0 + seed}}

    runs = [run(0, 0.6, 0.7, (0.5, 0.6)), run(1, 0.8, 0.9, (0.7, 0.8))]
    table = steps_table(runs)
    fitted, scored, after_scan = "0.800 ± 0.100 / 0.600 ± 0.000", "0.700 ± 0.100 / 0.500 ± 0.000", "0.600 ± 0.100"
    assert f"| scan-hog+cnn | 2 | {fitted} | {scored} | {after_scan} |" in table
    assert "ACC after student" in table and table.rstrip().endswith("| 4.0 | 6.5 |")
    assert steps_table([{k: v for k, v in r.items() if k != "steps"} for r in runs]) == ""
    (tmp_path / "s").mkdir()
    for r in runs:
        (tmp_path / "s" / f"m-seed{r['seed']}.json").write_text(json.dumps(r))
    assert "ACC after scan" in Path(report(tmp_path / "s")["markdown"]).read_text()


def test_runs_on_one_npz_file_named_two_ways_share_a_row():
    """A suite resumed from another folder names the same file by another path: its seeds still make one row."""
    def run(seed, dataset, acc):
        return {"method": "m", "dataset": dataset, "profile": "standard", "seed": seed, "acc": acc, "nmi": 0.5,
                "ari": 0.4, "seconds": 1.0, "cpu_seconds": 1.0}

    rows = benchmark.summarise([run(0, "npz:/work/shared/data/g.npz", 0.6), run(1, "npz:../shared/data/g.npz", 0.8),
                                run(0, "npz:../shared/data/other.npz", 0.1)])
    assert [r["seeds"] for r in rows] == [[0, 1], [0]]
    assert np.isclose(rows[0]["acc"], 0.7) and rows[0]["dataset"] == "npz:/work/shared/data/g.npz"
