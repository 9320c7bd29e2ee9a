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


# ---------------------------------------------------------------- numbers that cannot go stale
RESULTS = Path(__file__).resolve().parents[1] / "results"
KIT_NUMBER = re.compile(r"(?<![\d.])0\.\d{3}(?!\d)")  # how the kit states a score: ACC 0.572, NMI 0.745
QUOTE_MARK = "<!-- quoted -->"  # a cell quoting the seeds or the papers (their numbers, not the kit's)


def _result_values(folder=RESULTS) -> set[str]:
    """Every number in results/ (each run, each mean and std), as the 3-decimal strings a text would show."""
    import json

    values: set[str] = set()

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            values.add(f"{v:.3f}")
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for f in folder.rglob("*.json"):
        walk(json.loads(f.read_text()))
    return values


def stale_numbers(markdown: str, known: set[str]) -> list[str]:
    """The 3-decimal numbers a markdown text states that results/ does not hold; lines quoted with '>' and
    cells marked `<!-- quoted -->` are the seeds' and papers' words, not the kit's."""
    if QUOTE_MARK in markdown:
        return []
    text = "\n".join(line for line in markdown.splitlines() if not line.lstrip().startswith(">"))
    text = re.sub(r"`[^`]*`|\$[^$]*\$", "", text)  # code and formulas state no result
    return [m.group() for m in KIT_NUMBER.finditer(text) if m.group() not in known]


def test_the_stale_number_check_catches_a_planted_number():
    known = _result_values()
    assert stale_numbers("SCAN reaches 0.572 on GTSRB", known) == []  # in results/gtsrb-standard
    assert stale_numbers("SCAN reaches 0.417 on GTSRB", known) == ["0.417"]  # planted: no run says so
    assert stale_numbers("> the seed reported 0.611", known) == []  # a quote
    assert stale_numbers(f"{QUOTE_MARK}\n| seed 000 | 0.611 |", known) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_text_states_only_results_the_kit_holds(path):
    """Kit results in markdown come from results/ (a cell that reads them); a typed number must match a run."""
    known = _result_values()
    nb = nbformat.read(path, as_version=4)
    stale = [(i, n) for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
             for n in stale_numbers(cell.source, known)]
    assert not stale, f"{path.name}: numbers not in results/ (cell, number): {stale}"
