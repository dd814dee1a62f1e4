"""README.md and docs/*.md stay navigable: every relative link and image points at a file that exists,
every `#anchor` at a heading of its page (GitHub's slugs), every `make <target>` in code at a target the
Makefile has, and the README stays a front page (at most 260 lines).

No servers. README.md and the Makefile are kept out of the Astro image (.dockerignore), so `astro dev
pytest` deselects this module and names it; `make test` runs it."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.make_test  # README.md and the Makefile are not in the image

README_MAX_LINES = 260
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`([^`]+)`")
# [text](target) and ![alt](target), with an optional "title"; link text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
MAKE_CALL = re.compile(r"(?<![\w./-])make((?:\s+[^\s`]+)*)")
TARGET = re.compile(r"[a-z][a-z0-9-]*")
MAKEFILE_TARGET = re.compile(r"^([a-z][a-z0-9-]*):", re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def _split(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(code lines, prose paragraphs): the lines of fenced code blocks, and the paragraphs outside them
    (consecutive non-blank lines joined with newlines), each with the number of its first line."""
    code, paragraphs, current, start, fenced = [], [], [], 0, False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            if current:
                paragraphs.append((start, "\n".join(current)))
                current = []
            continue
        if fenced:
            code.append((number, line))
        elif line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            paragraphs.append((start, "\n".join(current)))
            current = []
    if current:
        paragraphs.append((start, "\n".join(current)))
    return code, paragraphs


def _line_of(start: int, text: str, offset: int) -> int:
    return start + text.count("\n", 0, offset)


def _without_code_spans(text: str) -> str:
    """The paragraph with every code span blanked out (same length, newlines kept): a `[x](y)` in code
    is no link, and a link's text may hold a code span."""
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", "x", m.group(0)), text)


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code."""
    found = []
    for start, text in _split(path)[1]:
        prose = _without_code_spans(text)
        found += [(_line_of(start, prose, m.start()), m.group(1)) for m in LINK.finditer(prose)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lowercased, every character but letters,
    digits, `_`, `-` and spaces dropped, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a page's headings (outside code blocks), duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for _, text in _split(path)[1]:
        for line in text.splitlines():
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return frozenset(result)


@cache
def makefile_targets() -> frozenset[str]:
    return frozenset(MAKEFILE_TARGET.findall((ROOT / "Makefile").read_text()))


def make_targets(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every `make <target>` in a code span or a code block. Variable assignments
    before the target (`make PYTHON=... run`) are skipped; `make` with no target names none."""
    code, paragraphs = _split(path)
    snippets = [(number, line) for number, line in code]
    for start, text in paragraphs:
        snippets += [(_line_of(start, text, m.start()), m.group(1).replace("\n", " "))
                     for m in CODE_SPAN.finditer(text)]
    found = []
    for number, snippet in snippets:
        for call in MAKE_CALL.finditer(snippet):
            words = [word for word in call.group(1).split() if not re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", word)]
            if words and TARGET.fullmatch(words[0]):
                found.append((number, words[0]))
    return found


def test_the_pages_exist():
    assert (ROOT / "README.md").is_file()
    assert len(doc_files()) > 1, "docs/ holds no page"


def test_every_relative_link_and_image_points_at_a_file_that_exists():
    broken = []
    for path in doc_files():
        for line, target in links(path):
            if not target or target.startswith(EXTERNAL) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0].split("?", 1)[0]
            if not (path.parent / file_part).exists():
                broken.append(f"{_name(path)}:{line}: link target {target!r} does not exist")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_anchor_points_at_a_heading_of_its_page():
    broken = []
    for path in doc_files():
        for line, target in links(path):
            if "#" not in target or target.startswith(EXTERNAL):
                continue
            file_part, anchor = target.split("#", 1)
            page = (path.parent / file_part).resolve() if file_part else path
            if page.suffix != ".md" or not page.is_file():
                continue  # a missing file is the other test's failure
            if anchor not in anchors(page):
                broken.append(f"{_name(path)}:{line}: link {target!r}: no heading #{anchor} in {_name(page)} "
                              f"(its anchors: {', '.join(sorted(anchors(page)))})")
    assert not broken, "links to missing headings:\n" + "\n".join(broken)


def test_every_make_target_mentioned_exists_in_the_makefile():
    targets = makefile_targets()
    assert {"run", "test", "dag", "airflow"} <= targets, sorted(targets)  # the parse itself works
    unknown = [f"{_name(path)}:{line}: `make {target}` - the Makefile has no target {target!r}"
               for path in doc_files() for line, target in make_targets(path) if target not in targets]
    assert not unknown, "make targets that do not exist:\n" + "\n".join(unknown)


def test_the_readme_is_a_front_page():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, (f"README.md: {lines} lines, more than {README_MAX_LINES}: move the "
                                       "details to a page in docs/ and link it")
