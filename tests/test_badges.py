"""The notebooks' Colab/Kaggle badges and install cells point at the repository named in pyproject.toml, and
`python -m course_lib badges` re-points a copy of the kit (a teacher's fork) at itself."""
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from course_lib import badges

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COLAB_FORM = re.compile(r"^https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/notebooks/[^/]+\.ipynb$")


def _source(path: Path) -> str:
    return "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text(encoding="utf-8"))["cells"])


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "kit"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


def test_the_repository_agrees_with_its_setting():
    assert badges.check(ROOT) == []
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    repository, ref = badges.read_setting(ROOT)
    assert project["project"]["urls"]["Repository"] == f"https://github.com/{repository}"
    assert (repository, ref) == (project["tool"]["course_kit"]["repository"], project["tool"]["course_kit"]["ref"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_has_the_github_form_and_names_its_notebook(path):
    links = badges.COLAB_LINK.findall(_source(path))
    assert links, f"{path.name}: no Colab badge"
    for link in links:
        assert COLAB_FORM.match(link), link
        assert link.endswith(f"/notebooks/{path.name}"), link


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_an_untouched_notebook_round_trips_byte_identical(path):
    text = path.read_text(encoding="utf-8")
    assert badges.dumps(json.loads(text)) == text


def test_a_fork_is_pointed_at_itself(tmp_path):
    root = _copy(tmp_path)
    changed = badges.point_at("teacher-x/my-course", "v1.2", root)
    assert set(changed) == {root / "pyproject.toml", *(root / "notebooks" / p.name for p in NOTEBOOKS)}
    assert badges.read_setting(root) == ("teacher-x/my-course", "v1.2")
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert 'Repository = "https://github.com/teacher-x/my-course"' in text
    # Only the setting's three lines changed in pyproject.toml.
    old = (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines()
    assert sum(a != b for a, b in zip(old, text.splitlines())) == 3 and len(old) == len(text.splitlines())
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        source = _source(path)
        links = badges.COLAB_LINK.findall(source) + badges.KAGGLE_LINK.findall(source)
        installs = badges.INSTALL_LINE.findall(source)
        assert len(links) == 2 and installs, path.name
        for line in links + installs:
            assert "teacher-x/my-course" in line and "v1.2" in line and "unsupervised-course-kit" not in line, line
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["kaggle"]["isInternetEnabled"] is True
    assert badges.check(root) == []
    assert badges.point_at("teacher-x/my-course", None, root) == {}, "a second run changes nothing"

    # A badge planted back in the broken form is reported, on that notebook only.
    path = root / "notebooks" / NOTEBOOKS[-1].name
    path.write_text(path.read_text(encoding="utf-8").replace(
        "colab.research.google.com/github/", "colab.research.google.com/github.com/"), encoding="utf-8")
    problems = badges.check(root)
    assert problems and all(p.startswith(f"{path.name}: Colab badge") for p in problems), problems


def test_the_command_on_a_copy(tmp_path):
    root = _copy(tmp_path)
    command = [sys.executable, "-m", "course_lib", "badges", "--root", str(root)]
    done = subprocess.run(command + ["--repo", "teacher-x/my-course", "--ref", "v1.2"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    lines = done.stdout.splitlines()
    assert "pyproject.toml: setting" in lines
    assert sum(line.startswith("notebooks/") for line in lines) == len(NOTEBOOKS), lines
    assert subprocess.run(command + ["--check"], capture_output=True, text=True, cwd=ROOT).returncode == 0
    nb = root / "notebooks" / NOTEBOOKS[0].name
    nb.write_text(nb.read_text(encoding="utf-8").replace("@v1.2", "", 1), encoding="utf-8")
    done = subprocess.run(command + ["--check"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and f"{nb.name}: install line" in done.stdout, done.stdout
