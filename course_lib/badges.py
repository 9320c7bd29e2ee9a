"""The repository the notebooks point at: their "Open in Colab/Kaggle" badges and install cells.

One setting, `[tool.course_kit]` in pyproject.toml (`repository = "OWNER/NAME"`, `ref = "BRANCH"`), says where the
kit lives. `point_at` writes it and rewrites every notebook in notebooks/ to match: the Colab and Kaggle badges of
the first markdown cell, the `%pip install` line, the metadata that asks Colab and Kaggle for a GPU (and Kaggle for
Internet) and papermill's `parameters` tag on the cell that defines PROFILE. Only those lines and keys change, the
rest of each notebook stays byte-identical. `check` lists what disagrees (`python -m course_lib badges --check`).
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO_PATTERN = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
REF_PATTERN = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")
# Any link a badge may hold now, the broken forms included ("colab.research.google.com/github.com/...").
COLAB_LINK = re.compile(r"https?://colab\.research\.google\.com/github(?:\.com)?/[^)\s\"']*")
KAGGLE_LINK = re.compile(r"https?://(?:www\.)?kaggle\.com/kernels/welcome\?src=[^)\s\"']*")
INSTALL_LINE = re.compile(r"[%!]pip install[^\"\n]*\"course_lib @ git\+[^\"\n]*\"")
PARAMETERS_CELL = 'PROFILE = os.environ.get("COURSE_PROFILE"'


def colab_url(repository: str, ref: str, name: str) -> str:
    return f"https://colab.research.google.com/github/{repository}/blob/{ref}/notebooks/{name}"


def kaggle_url(repository: str, ref: str, name: str) -> str:
    return f"https://kaggle.com/kernels/welcome?src=https://github.com/{repository}/blob/{ref}/notebooks/{name}"


def install_line(repository: str, ref: str) -> str:
    return f'%pip install -q "course_lib @ git+https://github.com/{repository}@{ref}"'


def read_setting(root: str | Path = ROOT) -> tuple[str, str]:
    """(repository, ref) from `[tool.course_kit]` in ROOT/pyproject.toml."""
    with open(Path(root) / "pyproject.toml", "rb") as f:
        table = tomllib.load(f).get("tool", {}).get("course_kit", {})
    if "repository" not in table:
        raise KeyError(f"{Path(root) / 'pyproject.toml'} has no [tool.course_kit] repository")
    return table["repository"], table.get("ref", "main")


def _set_key(text: str, table: str, key: str, value: str) -> str:
    """`key = "value"` in TOML `text`'s [table], editing only that line (adding the key or table if missing)."""
    line = f'{key} = "{value}"'
    header = re.search(rf"^\[{re.escape(table)}\][ \t]*(#.*)?$", text, re.M)
    if header is None:
        return text.rstrip("\n") + f"\n\n[{table}]\n{line}\n"
    nxt = re.compile(r"^\[", re.M).search(text, header.end())
    end = nxt.start() if nxt else len(text)
    body = text[header.end():end]
    key_line = re.compile(rf"^{re.escape(key)}[ \t]*=.*$", re.M)
    if key_line.search(body):
        body = key_line.sub(lambda _: line, body, count=1)
    else:
        kept = body.rstrip("\n")
        body = kept + "\n" + line + body[len(kept):]
    return text[:header.end()] + body + text[end:]


def write_setting(repository: str, ref: str, root: str | Path = ROOT) -> bool:
    """Put (repository, ref) into ROOT/pyproject.toml's `[tool.course_kit]` and `[project.urls]` Repository.
    Edits those lines of the text, not the rest of the file; returns whether the file changed."""
    if not REPO_PATTERN.fullmatch(repository):
        raise ValueError(f"the repository is OWNER/NAME, got {repository!r}")
    if not REF_PATTERN.fullmatch(ref):
        raise ValueError(f"not a branch or tag name: {ref!r}")
    path = Path(root) / "pyproject.toml"
    old = path.read_text(encoding="utf-8")
    text = _set_key(old, "project.urls", "Repository", f"https://github.com/{repository}")
    text = _set_key(_set_key(text, "tool.course_kit", "repository", repository), "tool.course_kit", "ref", ref)
    if text != old:
        path.write_text(text, encoding="utf-8")
    if read_setting(root) != (repository, ref):
        raise RuntimeError(f"{path} does not read back as {repository}@{ref}: edit its [tool.course_kit] by hand")
    return text != old


def _gpu_metadata(meta: dict) -> dict:
    """The notebook metadata with a GPU asked for on Colab and Kaggle (and Internet on Kaggle, for the install);
    other keys kept, a GPU type already chosen kept. Keys sorted, as Jupyter writes them."""
    colab, kaggle = dict(meta.get("colab", {})), dict(meta.get("kaggle", {}))
    colab["gpuType"] = colab.get("gpuType") or "T4"
    colab.setdefault("provenance", [])
    if kaggle.get("accelerator") in (None, "", "none"):
        kaggle["accelerator"] = "gpu"
    kaggle["isInternetEnabled"] = True
    new = {**meta, "accelerator": "GPU", "colab": dict(sorted(colab.items())), "kaggle": dict(sorted(kaggle.items()))}
    return dict(sorted(new.items()))


def _sub(cell: dict, pattern: re.Pattern, expected: str, what: str, found: list) -> None:
    """Replace every match of `pattern` in the cell's source by `expected`, line by line; append to `found` None
    for each match that was `expected` already, (what, detail) for each that was not."""
    def repl(m):
        found.append(None if m.group() == expected else (what, f"is {m.group()}, should be {expected}"))
        return expected

    src = cell["source"]
    cell["source"] = pattern.sub(repl, src) if isinstance(src, str) else [pattern.sub(repl, s) for s in src]


def _fix(nb: dict, name: str, repository: str, ref: str) -> list[tuple[str, str]]:
    """Bring one parsed notebook in line with (repository, ref), in place. Returns the problems found as
    (what, detail): those it fixed, and those it cannot (a badge or the install line missing)."""
    problems = []
    markdown = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    for pattern, url, what in ((COLAB_LINK, colab_url(repository, ref, name), "Colab badge"),
                               (KAGGLE_LINK, kaggle_url(repository, ref, name), "Kaggle badge")):
        found = []
        if markdown:
            _sub(markdown[0], pattern, url, what, found)
        problems += [p for p in found if p] or ([] if found else [(what, "missing from the first markdown cell")])
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            _sub(cell, INSTALL_LINE, install_line(repository, ref), "install line", found)
    problems += [p for p in found if p] or ([] if found else [("install line", "missing")])
    gpu = _gpu_metadata(nb["metadata"])
    if nb["metadata"] != gpu:
        keys = [k for k in ("accelerator", "colab", "kaggle") if nb["metadata"].get(k) != gpu[k]]
        problems.append(("GPU metadata", f"incomplete: {', '.join(keys)} (a GPU on Colab and Kaggle, Internet on Kaggle)"))
        nb["metadata"] = gpu
    cell = next((c for c in nb["cells"] if c["cell_type"] == "code" and PARAMETERS_CELL in "".join(c["source"])),
                None)
    if cell is not None and "parameters" not in cell["metadata"].get("tags", []):
        problems.append(("parameters tag", "missing on the cell that defines PROFILE"))
        cell["metadata"]["tags"] = cell["metadata"].get("tags", []) + ["parameters"]
    return problems


def dumps(nb: dict) -> str:
    """A notebook's text as the kit writes it (Jupyter's layout)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def rewrite_notebooks(root: str | Path = ROOT, repository: str | None = None,
                      ref: str | None = None) -> dict[Path, list[str]]:
    """Point every ROOT/notebooks/*.ipynb at (repository, ref), by default the pyproject setting. Writes only the
    notebooks that change; returns {path: what changed} for them."""
    if repository is None or ref is None:
        repository, ref = read_setting(root)
    changed = {}
    for path in sorted((Path(root) / "notebooks").glob("*.ipynb")):
        old = path.read_text(encoding="utf-8")
        nb = json.loads(old)
        fixed = [what for what, _ in _fix(nb, path.name, repository, ref)]
        if dumps(nb) != old:
            path.write_text(dumps(nb), encoding="utf-8")
            changed[path] = list(dict.fromkeys(fixed))
    return changed


def point_at(repository: str, ref: str | None = None, root: str | Path = ROOT) -> dict[Path, list[str]]:
    """Make a copy of the kit (e.g. a teacher's fork) its own home: write the setting (ref: the current one if
    None) into pyproject.toml and rewrite the notebooks. Returns {path: what changed}, pyproject.toml included."""
    if ref is None:
        try:
            ref = read_setting(root)[1]
        except KeyError:
            ref = "main"
    changed = {Path(root) / "pyproject.toml": ["setting"]} if write_setting(repository, ref, root) else {}
    return {**changed, **rewrite_notebooks(root, repository, ref)}


def check(root: str | Path = ROOT) -> list[str]:
    """What disagrees with the setting: badges or install lines in a wrong form or pointing elsewhere, GPU metadata
    or parameters tags missing, a pyproject Repository URL that names another repository. Empty when all agree."""
    root = Path(root)
    repository, ref = read_setting(root)
    with open(root / "pyproject.toml", "rb") as f:
        url = tomllib.load(f).get("project", {}).get("urls", {}).get("Repository")
    problems = [] if url == f"https://github.com/{repository}" else [
        f"pyproject.toml: [project.urls] Repository is {url}, should be https://github.com/{repository}"]
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        problems += [f"{path.name}: {what} {detail}" for what, detail in _fix(nb, path.name, repository, ref)]
    return problems
