"""Run records on disk: ``OUT/<run_id>/{spec.json, curve.csv, summary.json, checkpoint.pt}``.

Every file is written atomically (temp file in the same folder, then rename), and a
record counts as complete only once ``summary.json`` exists.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from gap_envs.atomic import atomic_write_bytes

SPEC, CURVE, SUMMARY, CHECKPOINT = "spec.json", "curve.csv", "summary.json", "checkpoint.pt"


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows in one CSV; columns are the union of keys, first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [
            {k: float(v) if v != "" else float("nan") for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()
