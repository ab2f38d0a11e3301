"""The documentation's links resolve, and the README stays a short front door with the two commands.

Reads README.md, CONTRIBUTING.md and docs/*.md; every Markdown link `[text](target)` whose target is not a web or
mail address must name a file that exists relative to the linking file, and an `#anchor` must be the GitHub-style
slug of a heading in the target file (lowercase, spaces to '-', punctuation other than '-' and '_' removed).
No network, stdlib only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
MAX_README_LINES = 200
COMMANDS = (
    "pip install -r requirements.txt && python app.py",
    "pip install -r requirements-dev.txt && pytest",
)

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
EXTERNAL = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where `[x](y)` is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: Markdown links and emphasis reduced to their text, lowercase, punctuation
    other than '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's slug in a Markdown file, with GitHub's -1, -2 ... for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(prose(path.read_text(encoding="utf-8")))]


def local_links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in links(page) if not target.lower().startswith(EXTERNAL)]


def test_pages_exist():
    assert README.is_file() and (ROOT / "CONTRIBUTING.md").is_file()
    assert (ROOT / "docs" / "README.md").is_file(), "docs/README.md indexes the pages"
    assert len(PAGES) > 3


def test_there_are_links_to_check():
    assert len(local_links()) > 20


@pytest.mark.parametrize(
    ("page", "target"), local_links(), ids=lambda v: v.relative_to(ROOT).as_posix() if isinstance(v, Path) else v
)
def test_relative_link_resolves(page: Path, target: str):
    where, _, anchor = target.partition("#")
    dest = (page.parent / where).resolve() if where else page
    assert dest.exists(), f"{page.relative_to(ROOT)}: link target {target!r} does not exist"
    if anchor:
        assert dest.is_file() and dest.suffix == ".md", f"{page.relative_to(ROOT)}: anchor on a non-Markdown {target!r}"
        assert anchor in anchors(dest), (
            f"{page.relative_to(ROOT)}: no heading with the slug {anchor!r} in {dest.relative_to(ROOT)} "
            f"(there are: {sorted(anchors(dest))})"
        )


def test_every_docs_page_is_indexed():
    index = set(links(ROOT / "docs" / "README.md"))
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert page.name in index, f"docs/README.md does not list {page.name}"


def test_readme_is_short_and_has_both_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    for command in COMMANDS:
        assert command in text, f"README.md lacks the command {command!r}"


def test_slug_follows_github():
    assert slug("Using the app from Python (`gradio_client`)") == "using-the-app-from-python-gradio_client"
    assert slug("Limits that protect the host") == "limits-that-protect-the-host"
    assert slug("Masks (panoptic DETR)") == "masks-panoptic-detr"
    assert slug("Resilience, as tested") == "resilience-as-tested"
