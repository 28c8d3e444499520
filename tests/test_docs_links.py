"""The docs point at things that exist: README.md and docs/*.md, checked against the tree.

    .venv/bin/python -m pytest tests/test_docs_links.py

What is checked, in README.md and every docs/*.md:

- every relative markdown link `[text](target)` or `![alt](target)`: the file or folder exists
  (relative to the page; a `#fragment` is cut off; `http(s):`, `mailto:` and `#...` links are not files);
- every project path in code (inline `code` spans and fenced blocks): a word that starts with a
  top-level folder of the repository followed by `/` (`pipelines/`, `taxifare_core/`, `scripts/`,
  `tests/`, `docs/`, `.ci/`) or is a top-level file (`Makefile`, `pyproject.toml`, ...) exists,
  relative to the repository root. A word is cut at `::` (a pytest id) and loses trailing
  punctuation `.,;:)`;
- every `python -m MODULE` of the project's packages names a module that exists;
- every `make TARGET` names a target of the Makefile.

Not paths, so not checked: a word holding a glob or a placeholder (`*`, `?`, `<`, `>`, `{`, `}`,
`$`, `...`, or an all-capitals segment such as `OUTPUT/` or `NAME`): `run-<id>/`, `train-*.csv`,
`OUTPUT/summary.json`, `pipelines/NAME.py`. Paths outside the repository (`/tmp/...`, `~/...`,
`gs://...`) start with none of the top-level names and are not checked either.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_FOLDERS = ("pipelines", "taxifare_core", "scripts", "tests", "docs", ".ci")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "requirements-predict.txt", ".gitignore")
PACKAGES = ("pipelines", "taxifare_core")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
PLACEHOLDER = re.compile(r"[*?<>{}$]|\.\.\.|(^|[/._-])[A-Z][A-Z_]+([/._-]|$)")
PATH_START = re.compile(
    rf"^(?:{'|'.join(re.escape(f) for f in TOP_FOLDERS)})/|^(?:{'|'.join(map(re.escape, TOP_FILES))})$"
)


def code_texts(text: str) -> list[str]:
    """The page's code: each fenced block, then each inline code span outside them."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return blocks + [match.group(2) for match in INLINE.finditer(prose)]


def project_paths(code: str) -> set[str]:
    """The words of some code that name a project path by the rule above."""
    found = set()
    for word in re.split(r"[\s\"'`=(\[]+", code):
        word = word.split("::", 1)[0].rstrip(".,;:)]")
        if PATH_START.match(word) and not PLACEHOLDER.search(word):
            found.add(word)
    return found


def modules(code: str) -> set[str]:
    """The project modules run as `python -m MODULE` in some code."""
    return {m for m in re.findall(r"-m\s+([\w.]+)", code) if m.split(".")[0] in PACKAGES and not PLACEHOLDER.search(m)}


def make_targets(code: str) -> set[str]:
    """The targets of every `make TARGET` in some code (options and VAR=value words skipped)."""
    return {t for t in re.findall(r"(?:^|[\s;&(`])make\s+([a-z][\w-]*)\b(?!=)", code)}


def link_targets(text: str) -> set[str]:
    """Relative link targets outside code, their #fragment cut off."""
    prose = INLINE.sub("", FENCE.sub("", text))
    targets = set()
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z+.-]*:", target) or target.startswith("#"):
            continue
        targets.add(target.split("#", 1)[0])
    return targets


def module_exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_path_module_and_make_target_of_the_page_exists(page):
    text = page.read_text()
    code = code_texts(text)
    missing = [f"link {t}" for t in sorted(link_targets(text)) if not (page.parent / t).exists()]
    paths = set().union(*map(project_paths, code)) if code else set()
    missing += [f"path {p}" for p in sorted(paths) if not (ROOT / p).exists()]
    names = set().union(*map(modules, code)) if code else set()
    missing += [f"module {m}" for m in sorted(names) if not module_exists(m)]
    targets = set().union(*map(make_targets, code)) if code else set()
    missing += [f"make target {t}" for t in sorted(targets - makefile_targets())]
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {missing}"


def test_the_rules_tell_paths_from_placeholders():
    code = (
        "see `scripts/x.py::test_y`, `pipelines/cli.py:`, run-<id>/stats.json, `docs/*.md` "
        "OUTPUT/summary.json pipelines/NAME.py taxifare_core/storage/ Makefile /tmp/docs/x"
    )
    assert project_paths(code) == {"scripts/x.py", "pipelines/cli.py", "taxifare_core/storage/", "Makefile"}
    assert modules("python -m pipelines.preprocess --x; python -m pytest; -m pipelines.NAME") == {
        "pipelines.preprocess"
    }
    assert make_targets("make bench ARGS=1; `make test`; make -C x; PYTHON=python3 make run") == {
        "bench",
        "test",
        "run",
    }
    assert link_targets("[a](docs/x.md#y) [b](https://e.org) [c](#z) ![p](img/r.png) `[d](no.md)`") == {
        "docs/x.md",
        "img/r.png",
    }
    assert not module_exists("pipelines.nothing_here") and module_exists("pipelines.preprocessing")
