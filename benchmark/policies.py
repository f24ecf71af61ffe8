"""Behaviour-policy snapshots: the actors that gapbench's datasets are rolled out from.

A snapshot of task ``T`` labelled ``L`` is the file ``<policy_dir>/T/L.pt``::

    torch.save({"actor": TanhGaussianActor.state_dict(), "obs_dim": int, "act_dim": int,
                "hidden": [256, 256]})

listed in ``<policy_dir>/T/snapshots.json``, a list of records in training order (sorted
by ``steps``)::

    {"label", "file", "steps", "seed", "return_mean", "return_std", "normalized_score",
     "real_gap", "command", ...}

``steps`` counts environment steps of the behaviour-policy training run. The labels
``medium`` and ``expert`` are the named qualities; other labels (``step-20000``, ...) are the
successive training snapshots that ``medium-replay`` datasets are rolled out from. Extra
keys in a record (e.g. ``updates``) are kept.

Published records also carry ``digest`` (a hash of the actor's parameters) and
``dataset_version``: the version of the dataset ids rolled out from this set of policies
(``gapbench/<task>/<quality>-v<dataset_version>``), raised by one at every publication
that changes them.

``policy_dir()`` is ``$GAPBENCH_POLICY_DIR`` when set, else the folder ``gap_envs/policies/``
shipped with the package (:data:`SHIPPED_DIR`). The snapshots are data, kept beside the
dataset storage that names its ids after their ``dataset_version``; this module (which
needs the actor class) is the code that reads and writes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gapbench import gap_envs
from gapbench.algorithms.nets import TanhGaussianActor
from gapbench.gap_envs.atomic import atomic_write_bytes
from gapbench.gap_envs.tasks import get_task

POLICY_DIR_ENV = "GAPBENCH_POLICY_DIR"
SHIPPED_DIR = Path(gap_envs.__file__).resolve().parent / "policies"  # package data
INDEX_FILE = "snapshots.json"
NAMED_LABELS = ("medium", "expert")
RECORD_KEYS = (
    "label",
    "file",
    "steps",
    "seed",
    "return_mean",
    "return_std",
    "normalized_score",
    "real_gap",
    "command",
)
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class SnapshotError(ValueError):
    """A snapshot that is missing, malformed or cannot be read."""


class SnapshotNotFoundError(SnapshotError):
    """No snapshot for the task, or no snapshot with that label."""


def policy_dir(path: str | os.PathLike | None = None) -> Path:
    """The snapshot root: ``path`` if given, else ``$GAPBENCH_POLICY_DIR``, else
    :data:`SHIPPED_DIR`."""
    return _root(path)


def _root(path: str | os.PathLike | None) -> Path:
    if path:
        return Path(path).expanduser()
    env = os.environ.get(POLICY_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return SHIPPED_DIR


def _task_dir(task: str, root: str | os.PathLike | None) -> Path:
    get_task(task)  # a clear error for an unknown task name
    return _root(root) / task


# -- reading -----------------------------------------------------------------------------------
def _read_index(task_dir: Path) -> list[dict[str, Any]]:
    index = task_dir / INDEX_FILE
    if not index.exists():
        return []
    try:
        records = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise SnapshotError(f"cannot read the snapshot index {index}: {err}") from None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and "label" in r for r in records
    ):
        raise SnapshotError(f"malformed snapshot index {index}: expected a list of records")
    return records


def _tasks_with_snapshots(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / INDEX_FILE).is_file())


def list_snapshots(task: str, policy_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The records of ``task``'s snapshots in training order ([] when it has none)."""
    return _read_index(_task_dir(task, policy_dir))


def get_snapshot(
    task: str, label: str, policy_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The record of one snapshot; a clear error naming the available ones if it is missing."""
    task_dir = _task_dir(task, policy_dir)
    records = _read_index(task_dir)
    if not records:
        others = _tasks_with_snapshots(task_dir.parent)
        raise SnapshotNotFoundError(
            f"no behaviour-policy snapshots for task {task!r} in {task_dir.parent} "
            f"(tasks with snapshots: {', '.join(others) or 'none'}); train and publish them "
            f"with `gapbench behavior train --task {task}` and `gapbench behavior publish`, "
            f"or point {POLICY_DIR_ENV} at a folder that has them"
        )
    for record in records:
        if record["label"] == label:
            return record
    raise SnapshotNotFoundError(
        f"no snapshot {label!r} for task {task!r} in {task_dir}; "
        f"available: {', '.join(r['label'] for r in records)}"
    )


def load_actor(
    task: str, label: str, policy_dir: str | os.PathLike | None = None
) -> TanhGaussianActor:
    """The snapshot's actor on the CPU, in eval mode."""
    record = get_snapshot(task, label, policy_dir)
    path = _task_dir(task, policy_dir) / record.get("file", f"{label}.pt")
    if not path.is_file():
        raise SnapshotNotFoundError(
            f"snapshot {label!r} of task {task!r} is listed but its file {path} is missing"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        actor = TanhGaussianActor(
            int(state["obs_dim"]), int(state["act_dim"]), tuple(int(h) for h in state["hidden"])
        )
        actor.load_state_dict(state["actor"])
    except Exception as err:  # a truncated/corrupt file, a wrong layout, a shape mismatch
        raise SnapshotError(f"cannot load snapshot {path}: {err}") from None
    t = get_task(task)
    if (actor.net[0].in_features, actor.act_dim) != (t.obs_dim, t.act_dim):
        raise SnapshotError(
            f"snapshot {path} is for obs/action sizes {actor.net[0].in_features}/"
            f"{actor.act_dim}, but task {task!r} has {t.obs_dim}/{t.act_dim}"
        )
    return actor.eval()


def snapshot_digest(task: str, label: str, policy_dir: str | os.PathLike | None = None) -> str:
    """sha256 of the snapshot's parameters (names and float32 bytes): equal actors, equal
    digests, whatever the file's container bytes."""
    h = hashlib.sha256()
    for key, value in sorted(load_actor(task, label, policy_dir).state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def dataset_version(task: str, policy_dir: str | os.PathLike | None = None) -> int:
    """Version of the task's dataset ids: its published expert's ``dataset_version`` (0 when
    it has none, e.g. before any publication)."""
    for record in list_snapshots(task, policy_dir):
        if record["label"] == "expert":
            return int(record.get("dataset_version") or 0)
    return 0


# -- writing -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(task_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of one task's index between processes (POSIX only)."""
    task_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(task_dir, os.O_RDONLY)  # lock the folder itself: no stray lock file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _hidden_sizes(actor: nn.Module) -> list[int]:
    linears = [m for m in actor.net if isinstance(m, nn.Linear)]
    return [m.out_features for m in linears[:-1]]


def save_snapshot(
    task: str,
    label: str,
    actor: TanhGaussianActor,
    record: dict[str, Any] | None = None,
    policy_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Save ``actor`` as ``<policy_dir>/<task>/<label>.pt`` and list ``record`` for it.

    Both files are written atomically (temp file + rename); a snapshot with the same label
    is replaced and the index stays sorted by ``steps``. Returns the stored record.
    """
    if not _LABEL_RE.fullmatch(label):
        raise SnapshotError(f"snapshot label {label!r} must match {_LABEL_RE.pattern}")
    if label == "random":
        raise SnapshotError("'random' is reserved for uniform random actions; choose another label")
    t = get_task(task)
    obs_dim, act_dim = actor.net[0].in_features, actor.act_dim
    if (obs_dim, act_dim) != (t.obs_dim, t.act_dim):
        raise SnapshotError(
            f"actor has obs/action sizes {obs_dim}/{act_dim}, but task {task!r} has "
            f"{t.obs_dim}/{t.act_dim}"
        )
    rec = {k: None for k in RECORD_KEYS}
    rec.update(record or {})
    if rec.get("steps") is None:
        raise SnapshotError(f"the record of snapshot {label!r} needs 'steps' (env steps trained)")
    rec["steps"] = int(rec["steps"])
    rec["label"], rec["file"] = label, f"{label}.pt"

    import io

    state = {
        "actor": {k: v.detach().cpu() for k, v in actor.state_dict().items()},
        "obs_dim": int(obs_dim),
        "act_dim": int(act_dim),
        "hidden": _hidden_sizes(actor),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    task_dir = _task_dir(task, policy_dir)
    with _locked(task_dir):
        atomic_write_bytes(task_dir / rec["file"], buf.getvalue())
        records = [r for r in _read_index(task_dir) if r["label"] != label]
        records.append(rec)
        records.sort(key=lambda r: int(r.get("steps") or 0))  # stable: ties keep their order
        text = json.dumps(records, indent=2, default=_json_default) + "\n"
        atomic_write_bytes(task_dir / INDEX_FILE, text.encode())
    return rec


@contextlib.contextmanager
def replace_task_folder(task: str, policy_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a staging policy root; when the block ends without error, its ``<task>`` folder
    replaces the task's folder in ``policy_dir`` as a whole (readers see the old set or the
    new one). On error the staging folder is removed and the old set is untouched."""
    root = _task_dir(task, policy_dir).parent
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{task}.staging-"))
    try:
        yield staging
        target, old = root / task, root / f".{task}.old-{staging.name.rsplit('-', 1)[-1]}"
        if target.exists():
            os.replace(target, old)
        os.replace(staging / task, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


__all__ = [
    "INDEX_FILE",
    "NAMED_LABELS",
    "POLICY_DIR_ENV",
    "RECORD_KEYS",
    "SHIPPED_DIR",
    "SnapshotError",
    "SnapshotNotFoundError",
    "dataset_version",
    "get_snapshot",
    "list_snapshots",
    "load_actor",
    "policy_dir",
    "replace_task_folder",
    "save_snapshot",
    "snapshot_digest",
]
