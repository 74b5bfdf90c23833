"""The ablation table in docs/benchmarks.md is also the ablation script's memory when its JSON store is gone:
reading the table back and writing it again must give the same lines, and a new row is added, not a
replacement for the table."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from camvid_ablation import report, rows_from_doc  # noqa: E402
from doc_block import read_doc_block, write_doc_block  # noqa: E402

CATS = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


def _row(name: str, kind: str, miou: float, obj: float) -> dict:
    metrics = {"miou": miou, **{f"iou/{c}": 0.5 for c in CATS}, "iou/object": obj}
    row = {"name": name, "kind": kind, "run": f"/runs/{name}", "settings": "" if name == "base" else "a=1",
           "command": f"cmd {name}", "metrics": metrics}
    row.update(train_min=12.4, total_min=15.5, best_epoch=11) if kind == "train" else row.update(eval_s=28.0)
    return row


def test_ablation_table_round_trips_through_the_doc(tmp_path: Path) -> None:
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nbefore\n")
    rows = [_row("base", "train", 0.802, 0.326), _row("flip", "tta", 0.8068, 0.333)]
    write_doc_block(doc, "camvid-ablations", report(rows))
    lines = read_doc_block(doc, "camvid-ablations")
    back = rows_from_doc(lines)
    assert [r["name"] for r in back] == ["base", "flip"]
    assert back[0]["metrics"]["iou/object"] == 0.326 and back[1]["eval_s"] == 28.0
    assert back[0]["best_epoch"] == 11 and back[0]["settings"] == "" and back[1]["command"] == "cmd flip"
    assert report(back) == lines
    # a row added later keeps the earlier ones, and the Δ columns still refer to the first row
    new = report(back + [_row("more", "train", 0.812, 0.4)])
    assert len(rows_from_doc(new)) == 3 and "| 0.8120 | +0.0100 |" in "\n".join(new)
    assert doc.read_text().startswith("# Benchmarks\n\nbefore\n")


def test_the_real_doc_table_parses() -> None:
    lines = read_doc_block(REPO / "docs" / "benchmarks.md", "camvid-ablations")
    rows = rows_from_doc(lines)
    assert rows and rows[0]["kind"] == "train" and report(rows) == lines
    assert read_doc_block(REPO / "docs" / "absent.md", "camvid-ablations") == []
