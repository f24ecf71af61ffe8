"""Run state: who holds a run, how far it got, and whether its record stands.

One home for everything that reads or changes the state of a run folder ``OUT/<run_id>/``,
used alike by the matrix (status), the executors (workers), ``gapbench run`` and tuning:

* the per-run lock ``OUT/<run_id>/.lock`` (:class:`RunLock`): created with O_EXCL and
  holding the owner's PID, host and start time, touched every :data:`LOCK_HEARTBEAT_S`
  while held. A lock whose PID is dead on this host (or reused by a later process), or
  from another host and not touched for :data:`LOCK_TIMEOUT_S`, is stale and taken over
  (:func:`lock_alive`), so two processes never run the same id;
* a run's status (:func:`run_status`: done, failed, running, interrupted, missing) and
  the last evaluation of an unfinished run (:func:`last_evaluation`);
* whether a complete record must run again (:func:`rerun_reason`: a failed record with
  ``retry_failed`` or one that failed on another device, a done record whose dataset
  changed), and running a spec under its lock (:func:`run_locked`), which sets such a
  record's summary and curve aside first so a record never shows two summaries;
* :func:`exclusive`, a blocking OS lock (flock) on a file or folder, released when its
  process dies: tuning's per-run-id lock and the matrix manifest's folder lock;
* the stop request ``OUT/STOP`` (:func:`request_stop`, ``gapbench matrix stop``): every
  run of the folder checkpoints where it stands and exits (:class:`RunStopped`), and no
  new run starts, so a sitting or a cluster allocation ends without losing the updates
  since the last periodic checkpoint; ``matrix run`` clears it when it starts;
* Ctrl-C and SIGTERM as the same request for the process that gets them
  (:func:`interrupts_as_stop`, ``gapbench run`` and a local ``matrix run``): the first asks
  its runs to checkpoint and stop, a second aborts at once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gapbench.benchmark import records
from gapbench.gap_envs.atomic import pid_alive

# the matrix's logger: a run's "starting"/"finished" lines read as they always have
log = logging.getLogger("gapbench.matrix")

LOCK = ".lock"
LOCK_HEARTBEAT_S = 30.0  # a lock's holder touches it this often
LOCK_TIMEOUT_S = 300.0  # a lock from another host not touched for this long is stale
STATUSES = ("done", "failed", "running", "interrupted", "missing")
STOP = "STOP"  # in a results folder: its runs checkpoint and stop (request_stop)
STOP_POLL_S = 2.0  # a run looks for the stop request at most this often


class RunStopped(KeyboardInterrupt):
    """A run checkpointed where it stood and stopped because its folder asked it to
    (:func:`request_stop`). A KeyboardInterrupt, so that like Ctrl-C it leaves no summary
    and the next run of the same spec resumes it."""


# -- the stop request ----------------------------------------------------------------------
def request_stop(out: str | Path) -> Path:
    """Ask every run of the results folder ``out`` to checkpoint and stop."""
    path = Path(out) / STOP
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")
    return path


def clear_stop(out: str | Path) -> bool:
    """Remove the folder's stop request; True if there was one."""
    try:
        (Path(out) / STOP).unlink()
    except FileNotFoundError:
        return False
    return True


def stop_requested(out: str | Path) -> bool:
    return (Path(out) / STOP).exists()


def stop_poller(
    out: str | Path, every_s: float = STOP_POLL_S, also: Callable[[], bool] | None = None
):
    """A cheap ``stop()`` for a training loop: True once the folder asks its runs to stop,
    or ``also()`` does (a worker's interrupt flag); both are looked at at most every
    ``every_s`` seconds (a loop step can be a millisecond)."""
    path, last, seen = Path(out) / STOP, -float("inf"), False

    def stop() -> bool:
        nonlocal last, seen
        if not seen and time.monotonic() - last >= every_s:
            last = time.monotonic()
            seen = path.exists() or (also is not None and also())
        return seen

    return stop


@contextlib.contextmanager
def interrupts_as_stop(
    on_first: Callable[[], None] | None = None, flag: Any = None
) -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C (SIGINT) and SIGTERM are a stop request: the first sets
    ``flag`` (default a new :class:`threading.Event`; a matrix passes a multiprocessing
    Event its workers poll) and calls ``on_first``; the yielded ``stop()`` then returns
    True, and a run polling it checkpoints where it stands and raises :class:`RunStopped`.
    A second signal raises KeyboardInterrupt at once: the kill path, which loses the
    updates since the last periodic checkpoint. The previous handlers come back on exit; an
    ignored signal stays ignored. Signal handlers live in the main thread only; elsewhere
    the block changes nothing."""
    flag = threading.Event() if flag is None else flag
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        if on_first is not None:
            on_first()

    # a signal ignored on entry stays ignored: a shell starts `cmd &` with SIGINT ignored,
    # so that a Ctrl-C meant for the script does not reach its background jobs
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield flag.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- reading a lock ------------------------------------------------------------------------
def read_lock(run_dir: Path) -> dict[str, Any] | None:
    """A run's lock: its content ({"pid", "host", "since"}) plus the file's "mtime"
    (refreshed by the holder's heartbeat); None when there is none."""
    path = Path(run_dir) / LOCK
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    data["mtime"] = mtime
    return data


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), where /proc tells; else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def lock_alive(lock: dict[str, Any] | None) -> bool:
    """Whether a lock's holder may still be running.

    Same host: its PID is alive (and was not reused by a process started after the lock
    was taken). Another host (a Ray cluster on a shared filesystem): its heartbeat touched
    the file within LOCK_TIMEOUT_S. A lock without a PID is being written by its creator
    for a moment, and garbage after that."""
    if not lock:
        return False
    age = time.time() - lock.get("mtime", 0.0)
    if "pid" not in lock:
        return age < 10.0
    if lock.get("host") not in (None, socket.gethostname()):
        return age < LOCK_TIMEOUT_S
    pid = int(lock["pid"])
    if not pid_alive(pid):
        return False
    started, since = _started_at(pid), lock.get("since")
    return not (started is not None and since is not None and started > float(since) + 2.0)


def holder(run_dir: Path) -> str:
    """Who holds a run's lock, for messages."""
    held = read_lock(run_dir) or {}
    return f"locked by pid {held.get('pid')} on {held.get('host')}"


def remove_stale_lock(run_dir: Path) -> None:
    """A worker killed between writing its summary and releasing its lock (a matrix
    stopped at that moment) leaves the lock of a finished run behind: remove it once its
    holder is gone. Nothing runs a finished run again, so nothing else takes that lock."""
    held = read_lock(run_dir)
    if held is not None and not lock_alive(held):
        (Path(run_dir) / LOCK).unlink(missing_ok=True)


# -- taking a lock -------------------------------------------------------------------------
def _remove_dead_writes(run_dir: Path) -> None:
    """Only the lock's holder writes in a run folder, so a temp file of an atomic write
    (``.NAME.<random>.tmp``) found on taking the lock is a dead holder's: killed between
    creating it and renaming it over its target (the target is intact)."""
    for tmp in run_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            log.info("removed %s, left by a writer killed mid-write", tmp)


class RunLock:
    """``OUT/<run_id>/.lock``: {"pid", "host", "since"}, touched every LOCK_HEARTBEAT_S
    while held; see the module docstring and :func:`lock_alive`."""

    def __init__(self, path: Path):
        self.path = path
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock | None:
        """The lock, or None when a live process holds it."""
        path = Path(run_dir) / LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = read_lock(run_dir)
                if held is None:  # released in the meantime: try again
                    continue
                if lock_alive(held):
                    return None
                # stale: move it aside atomically (one mover wins), then take it anew
                stale = path.with_name(f"{LOCK}.stale-{os.getpid()}")
                try:
                    os.rename(path, stale)
                except FileNotFoundError:
                    continue
                if _content(stale) == {k: v for k, v in held.items() if k != "mtime"}:
                    log.info("taking over the stale lock of pid %s in %s", held.get("pid"), run_dir)
                    stale.unlink(missing_ok=True)
                    continue
                # we moved a lock someone had just taken over: give it back
                with contextlib.suppress(OSError):
                    os.link(stale, path)
                stale.unlink(missing_ok=True)
                return None
            try:
                os.write(fd, json.dumps(mine).encode())
            finally:
                os.close(fd)
            _remove_dead_writes(Path(run_dir))
            lock = cls(path)
            lock._beat.start()
            return lock
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        held = _content(self.path)
        if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)


def _content(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock (flock) on ``path``, waiting for it; the OS releases it
    when the process dies. A folder is locked itself (no stray lock file); a file is
    created if missing. Serialises read-modify-write between processes (POSIX only)."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- a run's status ------------------------------------------------------------------------
def run_status(run_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """(status, summary) of one run record: done, failed, running, interrupted or missing.

    running: started (spec.json or checkpoint.pt) without a summary, and its lock's process
    is alive. interrupted: started, no summary, no live lock: the next ``run`` resumes it.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / records.SUMMARY
    if summary_path.is_file():
        try:
            summary = records.read_json(summary_path)
        except (OSError, ValueError):
            return "failed", {"status": "failed", "error": "unreadable summary.json"}
        return ("done" if summary.get("status") == "ok" else "failed"), summary
    if lock_alive(read_lock(run_dir)):
        return "running", None
    if (run_dir / records.SPEC).is_file() or (run_dir / records.CHECKPOINT).is_file():
        return "interrupted", None
    return "missing", None


def last_evaluation(run_dir: Path) -> tuple[int, float, float | None] | None:
    """(updates, normalized score, updates/s) of the last curve row of an unfinished run, if
    any; the pace is that of the last evaluation interval (evaluation included), None
    before a second row."""
    try:
        with open(Path(run_dir) / records.CURVE, newline="") as f:
            rows = list(csv.DictReader(f))
        step, score = int(rows[-1]["step"]), float(rows[-1]["normalized_score"])
    except (OSError, IndexError, KeyError, ValueError):
        return None
    pace = None
    with contextlib.suppress(KeyError, ValueError, IndexError):
        seconds = float(rows[-1]["wall_time_s"]) - float(rows[-2]["wall_time_s"])
        updates = step - int(rows[-2]["step"])
        pace = updates / seconds if seconds > 0 and updates > 0 else None
    return step, score, pace


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A record's summary; a corrupt one reads as a failed record (retried like one)."""
    try:
        summary = records.read_json(Path(run_dir) / records.SUMMARY)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": "failed", "error": "summary.json is unreadable"}
    return summary if isinstance(summary, dict) else {"status": "failed", "error": "bad summary"}


def _recorded_spec(run_dir: Path) -> dict[str, Any]:
    try:
        data = records.read_json(Path(run_dir) / records.SPEC)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def rerun_reason(run_dir: Path, spec: Any, retry_failed: bool) -> tuple[str, str] | None:
    """(kind, why) when the complete record in ``run_dir`` must not be returned for
    ``spec`` (kind "failed" or "stale": where the old summary is set aside), else None."""
    summary = read_summary(run_dir)
    if summary is None:
        return None
    recorded = _recorded_spec(run_dir)
    if summary.get("status") != "ok":
        if retry_failed:
            return "failed", "--retry-failed"
        # the device is not in the run id (a run resumes on another machine), so a run that
        # failed for want of a GPU must not stay failed when asked for on the CPU
        device = recorded.get("spec", {}).get("device")
        if device not in (None, spec.device):
            return "failed", f"it failed on device {device!r}, now asked for on {spec.device!r}"
        return None
    # the dataset's content is not in the run id either (ids stay stable across machines):
    # a replaced dataset makes the old numbers stale
    was = recorded.get("dataset_sha256")
    if spec.dataset and was:
        now = records.dataset_sha256(spec.dataset)
        if now not in (None, was):
            return "stale", f"dataset {spec.dataset!r} changed since it ran"
    return None


def _set_aside(run_dir: Path, kind: str) -> int:
    """Move a record's summary (and curve) to ``*.<kind>-<n>.*``; return n."""
    pattern = rf"summary\.{kind}-(\d+)\.json"
    taken = [re.fullmatch(pattern, p.name) for p in run_dir.iterdir()]
    n = 1 + max((int(m[1]) for m in taken if m), default=0)
    curve = run_dir / records.CURVE
    if curve.exists():
        os.replace(curve, run_dir / f"curve.{kind}-{n}.csv")
    os.replace(run_dir / records.SUMMARY, run_dir / f"summary.{kind}-{n}.json")
    return n


# -- running under the lock ----------------------------------------------------------------
class RunBusy(RuntimeError):
    """Another live process holds the run's lock (it is training that run id now)."""


def run_locked(
    spec: Any,
    out: str | Path,
    retry_failed: bool = False,
    progress: bool | None = False,
    stop=None,
) -> tuple[dict[str, Any], bool]:
    """(summary, recorded): run ``spec`` under its lock, or return its complete record as
    is (recorded=True) unless :func:`rerun_reason` says otherwise. Raises :class:`RunBusy`
    when a live process holds the lock: the same id is never trained twice at once, and
    :class:`RunStopped` when ``stop()`` asked the run to checkpoint and stop."""
    from gapbench.benchmark.harness import run as run_one

    run_dir = Path(out) / spec.run_id
    lock = RunLock.acquire(run_dir)
    if lock is None:
        raise RunBusy(holder(run_dir))
    try:
        summary = read_summary(run_dir)
        if summary is not None:
            why = rerun_reason(run_dir, spec, retry_failed)
            if why is None:
                return summary, True
            n = _set_aside(run_dir, why[0])
            log.info(
                "running again (%s); the old record is kept as summary.%s-%d.json",
                why[1],
                why[0],
                n,
            )
        log.info("starting")
        summary = run_one(spec, out, progress=progress, stop=stop)
        log.info("finished: %s", summary.get("status"))
        return summary, False
    finally:
        lock.release()


__all__ = [
    "LOCK",
    "LOCK_HEARTBEAT_S",
    "LOCK_TIMEOUT_S",
    "STATUSES",
    "STOP",
    "RunBusy",
    "RunLock",
    "RunStopped",
    "clear_stop",
    "exclusive",
    "holder",
    "interrupts_as_stop",
    "last_evaluation",
    "lock_alive",
    "pid_alive",
    "read_lock",
    "read_summary",
    "remove_stale_lock",
    "request_stop",
    "rerun_reason",
    "run_locked",
    "run_status",
    "stop_poller",
    "stop_requested",
]
