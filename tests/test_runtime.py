import os

import numpy as np
import pytest

from course_lib import runtime


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "standard")
    assert runtime.get_profile().name == "standard"
    assert runtime.get_profile("full").name == "full"
    monkeypatch.setenv("COURSE_PROFILE", "turbo")
    with pytest.raises(ValueError, match="quick.*standard"):
        runtime.get_profile()


def test_default_profile_is_quick_on_a_cpu(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(runtime, "has_accelerator", lambda: False)
    assert runtime.get_profile().name == "quick"


def test_setup_seeds_and_prints_the_profile_first(capsys):
    info = runtime.setup(7, "quick")
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("profile: quick") and "seed: 7" in first
    a = np.random.rand(3)
    runtime.setup(7, "quick", verbose=False)
    assert np.array_equal(a, np.random.rand(3))
    s = info.summary()
    assert s["profile"] == "quick" and "keras" in s and s["device"]


def test_long_runs_checkpoint_by_default_where_sessions_end_by_themselves(monkeypatch, tmp_path):
    from course_lib.methods import get_method

    x = np.zeros((8, 4, 4, 1), np.uint8)
    method = get_method("supervised-cnn")(3, epochs=2)
    monkeypatch.delenv("COURSE_CHECKPOINTS", raising=False)
    monkeypatch.setattr(runtime, "environment", lambda: "local")
    assert method.checkpoint_folder(x) is None  # a laptop: nothing written unless asked
    monkeypatch.setattr(runtime, "environment", lambda: "colab")
    folder = method.checkpoint_folder(x)
    assert folder.startswith("course_checkpoints/supervised-cnn-")  # in the working directory
    assert method.checkpoint_folder(x.copy()) == folder  # the same cell run again: the same folder
    assert get_method("supervised-cnn")(3, epochs=3).checkpoint_folder(x) != folder  # other settings
    assert method.checkpoint_folder(x + 1) != folder  # other images
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path))  # e.g. a mounted Google Drive
    assert method.checkpoint_folder(x).startswith(str(tmp_path))
    assert get_method("supervised-cnn")(3, checkpoint_dir="here").checkpoint_folder(x) == "here"
    assert get_method("supervised-cnn")(3, checkpoint_dir=False).checkpoint_folder(x) is None  # never


def test_a_tpu_runtime_is_named_and_not_used(monkeypatch, capsys):
    pytest.importorskip("tensorflow")
    monkeypatch.setattr(runtime, "environment", lambda: "colab")
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    info = runtime.setup(0, "quick")
    assert "does not train on TPUs" in capsys.readouterr().out
    assert info.strategy is None and info.replicas == 1


def test_progress_line_projects_the_time_left_from_the_steady_epochs():
    from course_lib import training

    line = training.progress_line("SimCLR: ", 1, 4, 0.5, [10.0, 2.0], 100)  # the first epoch traced the step
    assert line == "SimCLR: epoch 2/4  loss 0.5000  2.0 s  50 images/s  ~0.1 min left"


def test_augmentation_moves_into_the_model_on_an_accelerator(monkeypatch):
    import keras

    from course_lib import augment, training

    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    aug = augment.weak_augmenter(seed=0)
    monkeypatch.setattr(training, "_AUGMENT_ON_DEVICE", [False])
    assert training.augment_in_model(net, aug) is net and training.in_pipeline(aug) is aug
    monkeypatch.setattr(training, "_AUGMENT_ON_DEVICE", [True])
    inside = training.augment_in_model(net, aug)
    assert inside is not net and training.in_pipeline(aug) is None and training.on_device(aug) is aug
    assert any(getattr(layer, "layer", None) is aug for layer in inside.layers)
    assert inside.count_params() == net.count_params()
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(inside(x)), keras.ops.convert_to_numpy(net(x)), atol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(inside(x, training=True)), keras.ops.convert_to_numpy(net(x)))


def test_the_command_line_hides_tensorflows_start_up_lines_but_not_errors():
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("COURSE_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    ok = subprocess.run([sys.executable, "-m", "course_lib", "info"], capture_output=True, text=True, timeout=300,
                        env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("profile: ")  # the profile first
    assert "oneDNN" not in ok.stderr and "cuda drivers" not in ok.stderr and "I0000" not in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "course_lib", "benchmark", "--method", "no-such-method"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode != 0 and "unknown method 'no-such-method'" in bad.stderr  # a real error still shows


def test_atomic_write_renames_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "w.weights.h5"
    with runtime.atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".weights.h5") and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with runtime.atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["w.weights.h5"]
    with pytest.raises(RuntimeError):
        with runtime.atomic_write(tmp_path / "never.json") as tmp:
            raise RuntimeError("before writing")
    assert not (tmp_path / "never.json").exists()


def _ds(name, n_classes):
    from course_lib.data import Dataset

    return Dataset(np.zeros((1, 4, 4, 1), np.uint8), np.zeros(1, np.int64), [str(i) for i in range(n_classes)], name)


def test_data_kind_and_promised():
    kinds = {("digits", 10): "digits", ("synthetic-signs", 43): "synthetic-signs", ("gtsrb", 43): "gtsrb",
             ("npz:gtsrb_train_32.npz", 43): "gtsrb", ("mnist", 10): "mnist", ("npz:mnist_train.npz", 10): "mnist",
             ("cifar10", 10): "cifar10", ("npz:other.npz", 10): "npz:other.npz"}
    for (name, k), kind in kinds.items():
        assert runtime.data_kind(_ds(name, k)) == kind, name
    promise = {("quick", "gtsrb"): 0.2, ("standard", "gtsrb"): 0.4, ("standard", "mnist"): 0.9}
    gtsrb, mnist, cifar = _ds("gtsrb", 43), _ds("mnist", 10), _ds("cifar10", 10)
    assert runtime.promised(promise, "standard", gtsrb) == 0.4
    assert runtime.promised(promise, "full", gtsrb) == 0.2  # falls back to the quick promise
    assert runtime.promised(promise, "quick", mnist) == 0.2  # no quick row: twice chance
    assert runtime.promised(promise, "full", cifar) == 0.2
    assert runtime.promised({}, "quick", gtsrb) == 2 / 43


def test_the_emulated_check_turns_onednn_off_unless_the_user_chose(monkeypatch):
    # oneDNN's float16 weight gradients stalled the emulated check on an AVX512-FP16 Xeon (results/NOTES.md)
    from course_lib.runtime import without_onednn

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    without_onednn()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    without_onednn()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
