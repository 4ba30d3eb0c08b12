"""The repository's documents cite only what the repository contains.

* Outside ``docs/``, no file names the external specification or cites the reference's numbered oddities;
  they cite ``docs/design.md`` instead.
* Every ``docs/design.md §N`` / ``RN`` / ``DN`` citation names a section heading or an id of that file.
* Every relative link of the Markdown files (README.md, docs/, the others) points to a file of the repository,
  and to a heading there when it names one.
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = "docs/design.md"

# Assembled from pieces so that this file does not match its own patterns.
_SPEC_NAME = "reference" + ".md"
_ODDITY = "qu" + "irk"
FORBIDDEN = re.compile(re.escape(_SPEC_NAME) + "|" + rf"(?<![A-Za-z0-9_]){_ODDITY}s?(?![A-Za-z0-9_])",
                       re.IGNORECASE)

REF = r"(?:§\d+(?:\.\d+)*|[RD]\d+)"
CITATION = re.compile(rf"(?:docs/)?design\.md((?:\s*(?:,|;|and|–|-)?\s*{REF})+)")
REF_TOKEN = re.compile(r"§(\d+(?:\.\d+)*)|(?<![\w/.-])([RD]\d+)(?!\w)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
SECTION_NUMBER = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")
ID_ROW = re.compile(r"^\|\s*([RD]\d+)\s*\|")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
# Not part of the repository when walking the tree without git: caches, environments, build and run outputs.
SKIP_DIRS = {".git", ".venv", "venv", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox", ".eggs",
             ".idea", ".vscode", ".ipynb_checkpoints", "__pycache__", "build", "dist", "node_modules"}
TOP_LEVEL_OUTPUTS = {"runs"}  # the scripts' default output folder


@lru_cache(maxsize=1)
def repository_files() -> tuple[str, ...]:
    """Tracked files (``git ls-files``); without git, the working tree minus caches, environments and outputs."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        files = [f for f in out.stdout.decode("utf-8").split("\0") if f]
        if files:
            return tuple(f for f in files if (ROOT / f).is_file())
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        pass
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        top = Path(dirpath) == ROOT
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not (top and d in TOP_LEVEL_OUTPUTS)
                       and not d.endswith(".egg-info") and not (Path(dirpath) / d / "pyvenv.cfg").exists()]
        found += [(Path(dirpath) / f).relative_to(ROOT).as_posix() for f in filenames if f != ".git"]
    return tuple(sorted(found))


def read_text(path: str) -> str | None:
    """The file's text, or None for binary and very large files."""
    full = ROOT / path
    if full.stat().st_size > 4 << 20:
        return None
    with open(full, "rb") as fh:
        head = fh.read(8192)
        if b"\0" in head:
            return None
        data = head + fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=1)
def text_files() -> tuple[tuple[str, str], ...]:
    return tuple((f, t) for f in repository_files() if (t := read_text(f)) is not None)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, everything but word characters, hyphens and spaces dropped,
    spaces → hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def headings(path: Path) -> list[str]:
    lines, inside_code = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            inside_code = not inside_code
        elif not inside_code and (m := HEADING.match(line)):
            lines.append(m.group(1))
    return lines


@lru_cache(maxsize=1)
def design_targets() -> tuple[frozenset, frozenset]:
    """``(section numbers, ids)`` defined by docs/design.md."""
    path = ROOT / DESIGN
    sections = [m.group(1) for h in headings(path) if (m := SECTION_NUMBER.match(h))]
    ids = [m.group(1) for line in path.read_text(encoding="utf-8").splitlines() if (m := ID_ROW.match(line))]
    for kind, values in (("section", sections), ("id", ids)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        assert not dupes, f"{DESIGN}: {kind}(s) defined twice: {dupes}"
    return frozenset(sections), frozenset(ids)


def unknown_refs(text: str) -> list[str]:
    sections, ids = design_targets()
    bad = []
    for section, ident in REF_TOKEN.findall(text):
        if section and section not in sections:
            bad.append("§" + section)
        if ident and ident not in ids:
            bad.append(ident)
    return bad


def test_design_document_defines_sections_and_ids():
    sections, ids = design_targets()
    assert {str(n) for n in range(1, 16)} <= sections
    assert {"R1", "D1"} <= ids


def test_no_file_cites_a_document_the_repository_does_not_contain():
    offenders = []
    for path, text in text_files():
        if path.startswith("docs/"):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path}:{number}: {line.strip()[:100]}")
    assert not offenders, (f"cite {DESIGN} (a section §N or an id RN/DN) instead:\n" + "\n".join(offenders))


def test_every_design_citation_exists():
    bad, seen = [], 0
    for path, text in text_files():
        for number, line in enumerate(text.splitlines(), 1):
            for match in CITATION.finditer(line):
                seen += 1
                bad += [f"{path}:{number}: {ref}" for ref in unknown_refs(match.group(1))]
    assert seen > 20, f"only {seen} citations of {DESIGN} found: is the pattern still right?"
    assert not bad, f"citations of {DESIGN} that it does not define:\n" + "\n".join(bad)


def test_design_document_cross_references_exist():
    text = (ROOT / DESIGN).read_text(encoding="utf-8")
    body = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    bad = unknown_refs(body)
    assert not bad, f"{DESIGN} refers to sections or ids it does not define: {sorted(set(bad))}"


def markdown_files() -> list[str]:
    files = repository_files()
    return [f for f in files if f.endswith(".md")]


@pytest.mark.parametrize("doc", markdown_files())
def test_relative_links_point_to_repository_files(doc):
    files = set(repository_files())
    text = re.sub(r"```.*?```", "", (ROOT / doc).read_text(encoding="utf-8"), flags=re.DOTALL)
    bad = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (ROOT / doc).parent / path_part if path_part else ROOT / doc
        rel = os.path.relpath(resolved, ROOT).replace(os.sep, "/")
        if path_part and rel not in files and not any(f.startswith(rel.rstrip("/") + "/") for f in files):
            bad.append(f"{target}: no such file in the repository")
        elif anchor and rel.endswith(".md") and anchor not in {slug(h) for h in headings(ROOT / rel)}:
            bad.append(f"{target}: no heading with anchor #{anchor} in {rel}")
    assert not bad, f"{doc}: broken links:\n" + "\n".join(bad)


def test_slug_follows_github_anchors():
    assert slug("14. Reference behaviours reproduced on purpose") == "14-reference-behaviours-reproduced-on-purpose"
    assert slug("3.4 Control routing (`only_mid_control`)") == "34-control-routing-only_mid_control"
