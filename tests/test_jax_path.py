"""The GPU path of a JAX-only image (the lent GPU machines have JAX and no TensorFlow), on this CPU.

One subprocess with KERAS_BACKEND=jax, TensorFlow made unimportable and the device taken for an accelerator
(mixed_float16, augmentation inside the training step) runs `gpucheck` over every method at smoke size. On an
H200 (2026-12-04) this path ran every method, but the steps holding Keras' geometric augmentation layers were not
compiled, so JAX ran them op by op: 111 images/s for the supervised CNN (results/NOTES.md, "The GPU check on a
real GPU"). Here every model a method compiles must compile its training step.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.gpucheck import METHODS

ROOT = Path(__file__).resolve().parents[1]

NO_TENSORFLOW = '''
import sys
class NoTensorFlow:  # as on a JAX-only image
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTensorFlow())
'''

CHECK = '''
import json, sys
import keras
compiled, compile = [], keras.Model.compile
def recording_compile(self, *args, **kwargs):
    compile(self, *args, **kwargs)
    compiled.append([self.name, bool(self.jit_compile)])
keras.Model.compile = recording_compile
from course_lib import gpucheck, runtime
runtime.has_accelerator = lambda: True  # a GPU's path: mixed_float16, augmentation in the training step
doc = gpucheck.run(images=256, out=sys.argv[1], verbose=False)  # 128: pair-kmeans's 3 epochs too noisy
json.dump({"compiled": compiled, "tensorflow_loaded": "tensorflow" in sys.modules}, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="module")
def jax_check(tmp_path_factory):
    pytest.importorskip("jax")
    folder = tmp_path_factory.mktemp("jax")
    (folder / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(
        [str(folder), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-c", CHECK, str(folder / "check.json"), str(folder / "compiled.json")],
                         capture_output=True, text=True, timeout=1200, cwd=ROOT, env=env)
    assert (folder / "compiled.json").is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((folder / "check.json").read_text()), json.loads((folder / "compiled.json").read_text())


def test_every_method_trains_on_jax_without_tensorflow(jax_check):
    doc, recorded = jax_check
    assert not recorded["tensorflow_loaded"]
    assert doc["backend"] == "jax" and doc["policy"] == "mixed_float16" and doc["replicas"] == 1
    assert [r["method"] for r in doc["methods"]] == list(METHODS)
    for row in doc["methods"]:
        assert "error" not in row, (row["method"], row.get("traceback"))
        assert row["ok"], row  # finite losses that go down, predictions of the right shape


def test_every_training_step_is_compiled_on_jax(jax_check):
    _, recorded = jax_check
    assert len(recorded["compiled"]) >= len(METHODS)  # every method compiles at least one model
    uncompiled = [name for name, jit in recorded["compiled"] if not jit]
    assert not uncompiled, f"run op by op on JAX (a layer with supports_jit=False?): {uncompiled}"
