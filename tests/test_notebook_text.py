"""The notebooks' text is what students read: no control characters slipped in from escapes such as "\\b"."""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_sources_have_no_control_characters(path):
    nb = nbformat.read(path, as_version=4)
    bad = [(i, repr(m.group())) for i, cell in enumerate(nb.cells)
           for m in re.finditer(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", cell.source)]
    assert not bad, f"{path.name}: control characters (cell, char) {bad}; write LaTeX in raw strings (r'\\big')"


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5
