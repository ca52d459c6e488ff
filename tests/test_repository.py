"""The repository stands on its own: the measured facts its code and documents cite are in
docs/notes.md, not in a notes file beside the checkout, and every citation names a heading there."""

from __future__ import annotations

import re
import subprocess

from tests.images import ROOT

NOTES = ROOT / "docs" / "notes.md"
# A notes file outside the repository, cited as "NOTES.md", "(NOTES)" or "NOTES:"; Helm's
# NOTES.txt (the chart's install message) is a different thing.
OUTSIDE_NOTES = re.compile(r"\bNOTES\b(?!\.txt)")
CITATION = re.compile(r"docs/notes\.md#([\w-]+)")


def repository_texts() -> dict[str, str]:
    """Every text file git tracks or would track (not ignored), by path."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    texts = {}
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not yet in the index
            continue
        data = path.read_bytes()
        if b"\0" not in data:  # git's own test for binary files
            texts[name] = data.decode(errors="replace")
    return texts


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_nothing_cites_notes_outside_the_repository() -> None:
    texts = repository_texts()
    assert "docs/notes.md" in texts and "worker/decode.py" in texts
    this = "tests/test_repository.py"
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        if name != this
        for number, line in enumerate(text.splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert found == [], "cite a heading of docs/notes.md instead"


def test_every_citation_of_the_notes_names_one_of_its_headings() -> None:
    headings = {anchor(line[3:]) for line in NOTES.read_text().splitlines() if line[:3] == "## "}
    cited = {
        (name, m.group(1))
        for name, text in repository_texts().items()
        for m in CITATION.finditer(text)
    }
    assert len({name for name, _ in cited}) >= 5  # the code's citations are found at all
    assert {(name, heading) for name, heading in cited if heading not in headings} == set()
