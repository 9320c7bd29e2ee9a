"""A notebook opened as Colab opens it: in an empty folder, nothing of the repository around it, the kit
installed by the notebook's own install cell (pointed at a local clone instead of GitHub)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUN = textwrap.dedent("""
    import sys
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(sys.argv[1], as_version=4)
    NotebookClient(nb, timeout=900, resources={"metadata": {"path": sys.argv[2]}}).execute()
    nbformat.write(nb, sys.argv[1])
    print("EXECUTED")
""")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the repository")
def test_results_notebook_runs_from_an_empty_folder_with_only_the_installed_package(tmp_path):
    pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)  # (pip is slow on a shallow clone)
    if not (clone / "notebooks" / "07_results.ipynb").is_file():
        pytest.skip("the committed tree has no notebook 07")
    venv = tmp_path / "venv"  # the machine's libraries (TensorFlow...), but not this checkout's course_lib
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    work = tmp_path / "colab"  # what a Colab session starts in: an empty folder
    work.mkdir()
    notebook = work / "07_results.ipynb"
    nb = nbformat.read(clone / "notebooks" / "07_results.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "%pip install" in c.source)
    text = cell.source
    # the install cell, pointed at the local clone instead of GitHub (no network here); this machine already has
    # course_lib (the checkout's, for the other tests), Colab has none: install it anyway, without its deps
    install = '%pip install -q "course_lib @ git+https://github.com/course-kit/unsupervised-course-kit@main"'
    assert install in text, "the install cell has changed: update this test"
    local = f"git+file://localhost{clone}"  # pip's form of a local repository in a "name @ url" requirement
    cell.source = text.replace(install, f'%pip install -q --no-deps --ignore-installed "course_lib @ {local}"')
    nbformat.write(nb, notebook)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSE_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(COURSE_INSTALL="1", COURSE_PROFILE="quick", COURSE_DATA_DIR=str(tmp_path / "data"),
               MPLBACKEND="Agg", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run = subprocess.run([str(python), "-c", RUN, str(notebook), str(work)], capture_output=True, text=True,
                         cwd=work, env=env, timeout=1200)
    assert "EXECUTED" in run.stdout, (run.stdout + run.stderr)[-4000:]
    outputs = "".join(o.get("text", "") for c in nbformat.read(notebook, 4).cells
                      if c.cell_type == "code" for o in c.get("outputs", []))
    installed = subprocess.run([str(python), "-c", "import course_lib, sys; print(course_lib.__file__)"],
                               capture_output=True, text=True, env=env, cwd=work).stdout
    assert str(venv) in installed and str(ROOT) not in installed  # the notebook's own install, not this checkout
    assert "result suites in" in outputs and "gtsrb-standard" in outputs  # the published results were found
    assert "runs consistent" in outputs
