"""Run records on disk: ``OUT/<run_id>/{spec.json, curve.csv, summary.json}``, and while a
run is unfinished its resumable state ``checkpoint.pt`` + ``actions/``.

Every file is written atomically (temp file in the same folder, then rename), and a
record counts as complete only once ``summary.json`` exists.

Checkpoints hold tensors and plain data only and are loaded with ``weights_only=True``:
a planted or corrupt ``checkpoint.pt`` is refused with a clear error, never executed.
The replay of an online run is not in the checkpoint: the actions the collector took are
(``actions/<first step>.npy``, float32, written in chunks that never change once
written), and a resume re-simulates them from the seed, which rebuilds the replay and
the environment's state exactly (MuJoCo is deterministic) at ~1/30 of the bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapbench.gap_envs.atomic import atomic_write_bytes

SPEC, CURVE, SUMMARY, CHECKPOINT = "spec.json", "curve.csv", "summary.json", "checkpoint.pt"
ACTIONS = "actions"


class CheckpointError(RuntimeError):
    """A checkpoint or action log that cannot be loaded safely."""


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
    """Tensors and plain data only: anything else (a pickled object, a truncated file) is a
    CheckpointError naming the file, and nothing in it runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot load checkpoint {path} safely ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); delete it to restart the run"
        ) from None


def numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as plain data + a tensor (loadable with weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]))


def save_actions(run_dir: Path, start: int, actions: np.ndarray) -> None:
    """One chunk of the action log: the actions of env steps ``start .. start+len-1``."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(actions, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(Path(run_dir) / ACTIONS / f"{start:010d}.npy", buf.getvalue())


def load_actions(run_dir: Path, steps: int) -> np.ndarray:
    """The first ``steps`` logged actions; chunks past them (written after the last
    checkpoint by a run that was then killed) are removed."""
    folder = Path(run_dir) / ACTIONS
    chunks, done = [], 0
    for path in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
        start = int(path.stem)
        if start >= steps:
            path.unlink()
            continue
        if start != done:
            raise CheckpointError(f"action log {folder} has a hole at step {done} ({path.name})")
        try:
            chunk = np.load(path, allow_pickle=False)
        except Exception as err:
            raise CheckpointError(f"cannot read action chunk {path}: {err}") from None
        chunks.append(chunk)
        done += len(chunk)
    if done < steps:
        raise CheckpointError(
            f"action log {folder} holds {done} steps but the checkpoint needs {steps}; "
            "delete checkpoint.pt to restart the run"
        )
    return np.concatenate(chunks)[:steps] if chunks else np.zeros((0, 0), np.float32)


def remove_resume_state(run_dir: Path) -> None:
    """Drop what only a resume needs, once the record is complete."""
    (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
    folder = Path(run_dir) / ACTIONS
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()


def _dataset_files(source: str) -> list[Path]:
    """The files that hold a dataset's transitions: a Minari dataset's data files (looked up
    as :func:`gapbench.gap_envs.datasets.load` does; ``metadata.json`` left out: it describes), or
    the HDF5 file itself; [] when it is not here."""
    from gapbench.gap_envs.datasets import data_dir

    path = Path(source).expanduser()
    for folder in (data_dir() / source / "data", path / "data", path):
        if (folder / "metadata.json").is_file():
            return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "metadata.json")
    return [path] if path.is_file() else []


_HASHES: dict[tuple, str] = {}


def dataset_sha256(source: str) -> str | None:
    """SHA-256 of a dataset's content (its files, in path order), or None when it is not
    found locally. Cached per file size and mtime: a matrix hashes each dataset once."""
    files = _dataset_files(source)
    if not files:
        return None
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _HASHES:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode() + b"\0")
            with open(f, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
