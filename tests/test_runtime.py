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
