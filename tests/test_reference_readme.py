"""scripts/reference_readme.py: README's reference block is the report's, and only it changes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "reference_readme", ROOT / "scripts/reference_readme.py"
)
rr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rr)


def test_only_the_block_between_the_markers_changes():
    text = f"intro\n{rr.BEGIN}\nold table\n{rr.END}\n\nnarrative by hand\n"
    new = rr.replace_block(text, "new table\n")
    assert new == f"intro\n{rr.BEGIN}\nnew table\n{rr.END}\n\nnarrative by hand\n"
    assert rr.replace_block(new, "new table") == new  # idempotent
    for broken in ("no markers", f"{rr.END}\n{rr.BEGIN}", f"{rr.BEGIN}\n{rr.BEGIN}\n{rr.END}"):
        with pytest.raises(ValueError, match="marker"):
            rr.replace_block(broken, "x")


def test_readme_holds_the_block_once():
    text = (ROOT / "README.md").read_text()
    assert text.count(rr.BEGIN) == 1 and text.count(rr.END) == 1


def test_block_is_built_from_the_report_files(tmp_path):
    report, results, docs = tmp_path / "report", tmp_path / "results", tmp_path / "docs"
    (report / "figures").mkdir(parents=True)
    docs.mkdir()
    (results / "run-a").mkdir(parents=True)
    (results / "run-a" / "summary.json").write_text("{}")
    (results / "matrix.json").write_text(json.dumps({"runs": {"run-a": {}, "run-b": {}}}))
    (report / "runs.md").write_text("| runs table |\n")
    (report / "cells.md").write_text("| cells table |\n")
    (report / "aggregates.md").write_text("| aggregates table |\n")
    (report / "final_diagnostics.md").write_text("| metric | cell |\n")
    (report / "aggregates_cell1.md").write_text("| hopper table |\n")
    (report / "aggregate_scopes.json").write_text(
        json.dumps(
            [
                {"file": "aggregates.md", "cells_text": ["hopper, g, d", "walker2d, g, d"]},
                {"file": "aggregates_cell1.md", "cells_text": ["hopper, g, d"]},
            ]
        )
    )
    (report / "probability_of_improvement.csv").write_text(
        "baseline,other,point,lower,upper,cells\nh2o,bc,0.25,0.0,0.5,1\n"
    )
    (report / "figures" / "learning_curves_hopper.png").write_bytes(b"png")
    (report / "figures" / "diagnostics_hopper_q_real_mean.png").write_bytes(b"q")
    block = rr.build_block(report, results, docs)
    assert "**Records so far** (1 of the matrix's 2;" in block
    (results / "run-b").mkdir()
    (results / "run-b" / "summary.json").write_text("{}")
    assert "**Records** (all 2 of the matrix's runs;" in rr.build_block(report, results, docs)
    for table in ("| cells table |", "| aggregates table |", "| hopper table |", "| runs table |"):
        assert table in block
    assert "Every method that ran hopper, g, d:" in block
    assert "| bc | 0.25 [0.00, 0.50] | 1 |" in block and "| metric | cell |" in block
    assert "](docs/reference_learning_curves_hopper.png)" in block
    assert (docs / "reference_learning_curves_hopper.png").read_bytes() == b"png"
    assert "](docs/reference_q_real_hopper.png)" in block
    assert (docs / "reference_q_real_hopper.png").read_bytes() == b"q"
    (report / "runs.md").unlink()
    with pytest.raises(FileNotFoundError, match="build the report first"):
        rr.build_block(report, results, docs)


def test_readme_block_lists_every_shipped_record():
    # A record committed without rebuilding the block would leave README behind the records.
    import re

    text = (ROOT / "README.md").read_text()
    block = text.split(rr.BEGIN)[1].split(rr.END)[0]
    results = ROOT / "results" / "reference"
    done = sorted(p.parent.name for p in results.glob("*/summary.json"))
    expected = len(json.loads((results / "matrix.json").read_text())["runs"])
    heading = rr.records_heading(len(done), expected)
    assert heading in " ".join(block.split()), "run scripts/reference_readme.py"  # any wrapping
    rows = re.findall(
        r"^\| (?:halfcheetah|walker2d|hopper) \|.*\| (\d+) \| [-\d.]+ \|", block, re.M
    )
    assert len(rows) == len(done)
