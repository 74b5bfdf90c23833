"""The one way benchmark scripts write their results into docs/benchmarks.md: each owns a named block
between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, replaced in place on a re-run (appended the first
time), so one script's re-run never touches another's numbers."""

from __future__ import annotations

from pathlib import Path

HEADER = "# Benchmarks\n\nEvery number here comes from a run of the named script.\n"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_doc_block(doc: Path, name: str, lines: list[str]) -> None:
    """Put ``lines`` (without the markers) into block ``name`` of ``doc``."""
    begin, end = markers(name)
    text = doc.read_text() if doc.is_file() else HEADER
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def read_doc_block(doc: Path, name: str) -> list[str]:
    """The lines of block ``name`` of ``doc`` (without the markers); [] when the doc or block is absent."""
    begin, end = markers(name)
    text = doc.read_text() if doc.is_file() else ""
    if begin not in text or end not in text:
        return []
    return text[text.index(begin) + len(begin): text.index(end)].strip("\n").splitlines()
