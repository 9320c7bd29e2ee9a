"""Every method's full profile, as a student's GPU session runs it, on this CPU: `gpucheck --emulate`.

One subprocess (TensorFlow must be split into two logical devices before it starts) runs each method's full
code path at smoke size under mixed_float16 and a MirroredStrategy over two logical CPU devices, with the
augmentation in the training step as on a GPU; one test per method reads its row.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.gpucheck import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("gpu") / "check.json"
    run = subprocess.run([sys.executable, "-m", "course_lib", "gpucheck", "--emulate", "--images", "128",
                          "--out", str(out)], capture_output=True, text=True, timeout=1500, cwd=ROOT,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run


def test_the_check_runs_as_a_two_device_mixed_precision_session(emulated):
    doc, run = emulated
    assert doc["emulated"] and doc["replicas"] == 2 and doc["policy"] == "mixed_float16"
    assert [r["method"] for r in doc["methods"]] == list(METHODS)
    assert doc["tf_enable_onednn_opts"] in (os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "0")  # see runtime.without_onednn
    assert run.returncode == (0 if doc["ok"] else 1)  # the command's exit status says whether all passed


@pytest.mark.parametrize("method", METHODS)
def test_full_path_trains_under_mixed_float16_on_two_replicas(emulated, method):
    doc, _ = emulated
    row = next(r for r in doc["methods"] if r["method"] == method)
    assert "error" not in row, row.get("traceback")
    assert row["replicas"] == 2 and row["policy"] == "mixed_float16"
    assert row["finite"], row["loss_curves"]
    assert row["goes_down"], row["loss_curves"]  # every training phase's loss: last epoch below the first
    assert row["shape_ok"] and row["prediction_shape"] == [doc["images"]]
    assert row["images_per_second"] > 0 and row["projected_minutes"] > 0
    assert row["t4_minutes"] <= 60, row  # the full profile is planned to fit a Colab session
    assert row["ok"]


def test_iic_speed_is_read_from_an_epoch_that_did_not_compile():
    """IIC's smoke schedule is B, B, A: the last epoch is head A's first, which compiles head A's step. On an H200
    (2026-12-04) that epoch read 247 images/s against 38,847 for the steady one; the check takes the last epoch of
    a head that had trained before."""
    from types import SimpleNamespace

    from course_lib.gpucheck import curves_and_speed

    est = SimpleNamespace(params={"copies": 5}, batch_images=lambda: 32,
                          history_={"loss": [-7.0, -7.3, -9.0], "head": [1.0, 1.0, 0.0], "seconds": [9.0, 0.5, 8.0]})
    curves, speed = curves_and_speed("iic", est, 384)
    assert curves == {"head B": [-7.0, -7.3]}
    assert speed == pytest.approx(384 * 6 / 0.5)  # 12 batches of 32 images and their 5 copies in 0.5 s
