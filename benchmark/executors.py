"""Executors: run a matrix's runs in local worker processes or as Ray tasks.

Both executors call the same worker function, :func:`execute_run`, which

1. takes the run's lock ``OUT/<run_id>/.lock`` (created with O_EXCL, holding the owner's
   PID and host; a lock whose PID is dead on this host is stale and taken over), so two
   processes never run the same id;
2. returns a complete record as is, unless :func:`~gapbench.benchmark.runstate.rerun_reason`
   says it must run again:
   a failed record with ``retry_failed`` or when it failed on another device (``--device
   cuda`` without CUDA, then ``--device cpu``), a done record whose dataset's content
   changed since (its sha256 is in ``spec.json``); such a record's ``summary.json`` /
   ``curve.csv`` are moved aside to ``summary.<failed|stale>-<n>.json`` /
   ``curve.<...>-<n>.csv`` first, so a record never shows two summaries;
3. calls :func:`gapbench.benchmark.harness.run`, which resumes from ``checkpoint.pt`` if a killed
   run left one and records exceptions as ``status: failed``.

A stop request in the output folder (``OUT/STOP``, ``gapbench matrix stop``) is looked for
before a run starts and between its training steps: a run not started reports "stopped"
without starting; a running one checkpoints where it stands and reports "stopped" (its next
``matrix run`` resumes it exactly). A local matrix takes its first Ctrl-C or SIGTERM as the
same request for its own workers (:func:`run_local`); a Ray matrix writes its own request
file in ``OUT`` for its tasks on every node, and removes it once they have stopped
(:func:`run_ray`); either way the folder's other matrices go on. A second signal aborts
at once.

Steps 1 to 3 are :func:`gapbench.benchmark.runstate.run_locked`, which ``gapbench run`` calls too.

Seed groups (local executor): runs that differ only by seed, of an algorithm with a
seed-batched path (:data:`gapbench.algorithms.seeds.BATCHABLE`), run as one seed group
in one worker (:func:`gapbench.benchmark.seedgroup.run_group_locked`): the same steps 1 to 3
for every seed, the updates batched across seeds, each seed's record the one its separate
run writes (plus ``seed_group``). Only seeds that stand at the same update are grouped (no
checkpoint, or checkpoints at the same update: a group resumes as a group); a seed with
other partial state runs alone and resumes from its own checkpoint. By default only runs
on a GPU are grouped (on a CPU thread a group of 2-3 seeds is slower than its seeds run
apart); ``seed_groups=True`` (``--seed-groups``) groups CPU runs too, ``seed_groups=False``
(``--no-seed-groups``) none. Groups are started before single runs. Ray runs every seed as
its own task.

Local: a ``ProcessPoolExecutor`` with the "spawn" start method (torch and fork do not mix;
a script that calls :func:`run_matrix` needs the ``if __name__ == "__main__":`` guard);
each worker sets ``torch.set_num_threads(cpus_per_run)``, by default 1 (see
:func:`worker_threads`), sends its log records to the parent, and exits when the
parent dies (so a killed matrix leaves no orphan training behind, only checkpoints to
resume from). On a busy machine ``cpus_per_run=1`` avoids OpenMP threads spinning against
each other.

Ray: each run is a ``ray.remote`` task with ``num_cpus=cpus_per_run`` (default 1, also its
torch threads) and one GPU when the spec's device is cuda. ``address`` joins a running
cluster (the output folder must then be on a filesystem every node shares; a lock from
another node counts as held while its heartbeat is fresh); without one, a local Ray
instance is started with ``num_cpus = workers * cpus_per_run``. An already initialised
Ray session is used as is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from gapbench.benchmark.matrix import Matrix, write_manifest
from gapbench.benchmark.runstate import (
    RunBusy,
    RunStopped,
    clear_stop,
    holder,
    interrupts_as_stop,
    read_lock,
    read_summary,
    remove_stale_lock,
    rerun_reason,
    run_locked,
    run_status,
    stop_poller,
)

log = logging.getLogger("gapbench.matrix")

EXECUTORS = ("local", "ray")
RAY_MISSING = "the Ray executor needs ray: pip install 'gapbench[ray]'"
Result = dict[str, Any]


# -- the worker function -------------------------------------------------------------------
_current_run = threading.local()
_interrupted: Any = None  # a local worker's view of its matrix's Ctrl-C (run_local)


class _RunPrefix(logging.Filter):
    """Prefixes a worker's log lines with the run they belong to."""

    def filter(self, record: logging.LogRecord) -> bool:
        prefix = getattr(_current_run, "prefix", "")
        if prefix and not getattr(record, "_gapbench_prefixed", False):
            record.msg = f"[{prefix}] {record.getMessage()}"
            record.args = None
            record._gapbench_prefixed = True
        return True


def result_of(run_id: str, summary: dict[str, Any], skipped: bool = False) -> Result:
    return {
        "run_id": run_id,
        "status": summary.get("status", "failed"),
        "final_normalized_score": summary.get("final_normalized_score"),
        "wall_time_s": summary.get("wall_time_s"),
        "error": summary.get("error"),
        "skipped": skipped,
    }


def execute_run(
    spec_dict: dict[str, Any], out: str, retry_failed: bool = False, label: str = ""
) -> Result:
    """Run one spec under its lock (see the module docstring); return a small result."""
    from gapbench.benchmark.spec import RunSpec

    spec = RunSpec.from_dict(spec_dict).resolved()  # plain data in; resolved once, here
    stop = _stop_poller(out)
    if stop():
        return stopped_result(spec.run_id)
    _current_run.prefix = f"{label or spec.algorithm} {spec.run_id}"
    try:
        summary, recorded = run_locked(spec, out, retry_failed, stop=stop)
    except RunBusy as busy:
        return {"run_id": spec.run_id, "status": "running", "skipped": True, "error": str(busy)}
    except RunStopped:
        return stopped_result(spec.run_id)
    finally:
        _current_run.prefix = ""
    return result_of(spec.run_id, summary, skipped=recorded)


def _stop_poller(out: str) -> Callable[[], bool]:
    """The folder's stop request, and in a local worker its matrix's interrupt too."""
    return stop_poller(out, also=None if _interrupted is None else _interrupted.is_set)


def stopped_result(run_id: str) -> Result:
    """A run that a stop request kept from starting or checkpointed and stopped."""
    return {"run_id": run_id, "status": "stopped", "skipped": True, "error": None}


def execute_group(
    spec_dicts: list[dict[str, Any]], out: str, retry_failed: bool = False, label: str = ""
) -> list[Result]:
    """Run the seeds of one spec as one seed group under every seed's lock; return one
    result per seed. If another process holds one of the seeds, each seed runs on its own
    (:func:`execute_run`: the held one is reported running, the others run)."""
    from gapbench.benchmark.seedgroup import run_group_locked
    from gapbench.benchmark.spec import RunSpec

    specs = [RunSpec.from_dict(d).resolved() for d in spec_dicts]
    stop = _stop_poller(out)
    if stop():
        return [stopped_result(spec.run_id) for spec in specs]
    seeds = ",".join(str(s.seed) for s in specs)
    _current_run.prefix = f"{label or specs[0].algorithm} seeds {seeds}"
    try:
        pairs = run_group_locked(specs, out, retry_failed, stop=stop)
    except RunBusy:
        pairs = None
    except RunStopped:  # a seed with a record (done before, or failed alone) reports it
        summaries = [read_summary(Path(out) / spec.run_id) for spec in specs]
        return [
            stopped_result(spec.run_id) if summary is None else result_of(spec.run_id, summary)
            for spec, summary in zip(specs, summaries, strict=True)
        ]
    finally:
        _current_run.prefix = ""
    if pairs is None:
        return [execute_run(d, out, retry_failed, label) for d in spec_dicts]
    return [
        result_of(spec.run_id, summary, skipped=recorded)
        for spec, (summary, recorded) in zip(specs, pairs, strict=True)
    ]


def seed_group_jobs(runs: list[Any], out: Path, on_cpu: bool = True) -> list[tuple[Any, str]]:
    """Jobs for the local executor: (spec_dict, label) per run, except that runs differing
    only by seed, of a batchable algorithm and standing at the same update, become one job
    (list of spec_dicts, label) each, in the order of their first run. ``on_cpu=False``
    groups only runs on a GPU: on a CPU thread a group of 2 seeds was 10-20% slower than
    its seeds one after the other and 4 broke even, and a 6-run matrix on 2 workers took
    5% longer as seed groups (README "Performance")."""
    from gapbench.benchmark.seedgroup import group_problem

    groups: dict[tuple[str, str, int], list[Any]] = {}
    for r in runs:
        cell = json.dumps({**r.spec.to_dict(), "seed": 0}, sort_keys=True, default=str)
        groups.setdefault((cell, r.label, _checkpoint_updates(out / r.run_id)), []).append(r)
    grouped: list[tuple[Any, str]] = []
    single: list[tuple[Any, str]] = []
    for (_, label, _), members in groups.items():
        device_ok = on_cpu or all(r.spec.device != "cpu" for r in members)
        if len(members) > 1 and device_ok and group_problem([r.spec for r in members]) is None:
            grouped.append(([r.spec.to_dict() for r in members], label))
        else:
            single.extend((r.spec.to_dict(), r.label) for r in members)
    # a group is K runs long: started last, it would run alone after the others finish
    return grouped + single


def _checkpoint_updates(run_dir: Path) -> int:
    """The update a run's checkpoint stands at (0 without one)."""
    from gapbench.benchmark import records

    path = run_dir / records.CHECKPOINT
    return int(records.load_checkpoint(path)["updates"]) if path.exists() else 0


def _job_specs(job: tuple[Any, str]) -> list[dict[str, Any]]:
    spec_dicts = job[0]
    return spec_dicts if isinstance(spec_dicts, list) else [spec_dicts]


# -- local processes -----------------------------------------------------------------------
class _Forward(logging.Handler):
    """In the parent: hand a worker's record to the logger it was logged with."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)  # the matrix process died: stop; the checkpoint is there to resume


def _init_worker(threads: int, queue: Any, level: int, parent: int, interrupted: Any) -> None:
    import torch

    global _interrupted
    # A terminal's Ctrl-C reaches the whole process group: the parent alone answers it, by
    # setting ``interrupted``, which the running runs poll (run_local).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _interrupted = interrupted

    torch.set_num_threads(threads)
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.handlers.QueueHandler(queue)
    handler.addFilter(_RunPrefix())
    root.addHandler(handler)
    root.setLevel(level)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def worker_threads(workers: int) -> int:
    """Default torch threads of a local worker: one, whatever ``workers``. These small
    updates gain little from more threads, and on a machine with any other load OpenMP
    threads spin against each other (a 2-core machine ran the smoke matrix in 34 s with 1
    thread per run, 133 s with 2)."""
    return 1


def run_local(
    jobs: list[tuple[dict[str, Any], str]],
    out: Path,
    workers: int,
    retry_failed: bool,
    on_result: Callable[[Result], None],
    threads: int | None = None,
) -> None:
    """Run (spec_dict, label) jobs, and (list of spec_dicts, label) seed-group jobs
    (:func:`seed_group_jobs`), in a pool of ``workers`` spawned processes, each with
    ``threads`` torch threads (default :func:`worker_threads`). A worker killed by the OS
    (out of memory) breaks the pool: only the run it held is reported "crashed", the
    others go on in a fresh pool (see :func:`_after_break`).

    The first Ctrl-C or SIGTERM (called from the main thread) is a stop request for this
    matrix's workers alone (``OUT/STOP`` would stop every matrix on the folder): the running
    runs checkpoint where they stand, no new one starts, and KeyboardInterrupt is raised
    once they have; a second signal aborts at once, killing the workers (their runs resume
    from the last periodic checkpoint)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, _Forward())
    listener.start()
    level = logging.getLogger("gapbench").getEffectiveLevel()
    interrupted = ctx.Event()
    initargs = (threads or worker_threads(workers), queue, level, os.getpid(), interrupted)
    strikes: dict[str, int] = {}

    def stopping() -> None:
        log.warning(
            "interrupted: the running runs checkpoint where they stand and no new run "
            "starts (Ctrl-C again to abort at once)"
        )

    try:
        with interrupts_as_stop(stopping, interrupted):
            while jobs:
                pool = ProcessPoolExecutor(
                    max_workers=min(workers, len(jobs)),
                    mp_context=ctx,
                    initializer=_init_worker,
                    initargs=initargs,
                )
                broken, workers_seen = _run_pool(pool, jobs, out, retry_failed, on_result)
                jobs = _after_break(broken, workers_seen, out, retry_failed, on_result, strikes)
    finally:
        listener.stop()
        queue.close()
    if interrupted.is_set():
        raise KeyboardInterrupt


def _run_pool(pool, jobs, out, retry_failed, on_result) -> tuple[list[Any], dict[int, Any]]:
    """Run ``jobs`` in ``pool`` and shut it down; return the jobs a broken pool left and
    the pool's worker processes (pid -> Process, their exit codes tell who died how)."""
    futures, broken = {}, []
    try:
        for spec_dicts, label in jobs:
            work = execute_group if isinstance(spec_dicts, list) else execute_run
            fut = pool.submit(work, spec_dicts, str(out), retry_failed, label)
            futures[fut] = (spec_dicts, label)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                if isinstance(fut.exception(), BrokenProcessPool):
                    broken.append(futures[fut])
                else:
                    for result in _future_results(fut, futures[fut]):
                        on_result(result)
    except BaseException:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(Exception):
                proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    workers = dict(getattr(pool, "_processes", None) or {})
    pool.shutdown(wait=True)  # a broken pool terminates (SIGTERM) and joins its workers
    return broken, workers


def _after_break(broken, workers, out, retry_failed, on_result, strikes) -> list[Any]:
    """Sort the jobs a broken pool left, run by run: a run that finished anyway is reported;
    the run whose worker died by itself (any end but the pool's own SIGTERM) is "crashed",
    its checkpoint kept for the next ``matrix run``; the others are returned to run again
    (a seed group's as a group). A run in flight at three breaks is reported crashed too,
    so a loop always ends."""
    died = {pid: p.exitcode for pid, p in workers.items() if p.exitcode not in (0, -signal.SIGTERM)}
    again = []
    for job in broken:
        left = [
            spec_dict
            for spec_dict in _job_specs(job)
            if _unfinished(spec_dict, workers, died, out, retry_failed, on_result, strikes)
        ]
        if len(left) > 1:
            again.append((left, job[1]))
        elif left:
            again.append((left[0], job[1]))
    if again:
        log.warning("a worker process died; %d unfinished job(s) go on in a new pool", len(again))
    return again


def _unfinished(spec_dict, workers, died, out, retry_failed, on_result, strikes) -> bool:
    """One run of a broken pool's job: True if it is to run again, else reported here."""
    from gapbench.benchmark.spec import RunSpec

    spec = RunSpec.from_dict(spec_dict)
    run_dir = Path(out) / spec.run_id
    summary = read_summary(run_dir)
    if summary is not None and rerun_reason(run_dir, spec, retry_failed) is None:
        on_result(result_of(spec.run_id, summary))  # finished; only its answer was lost
        return False
    holder = (read_lock(run_dir) or {}).get("pid")
    strikes[spec.run_id] = strikes.get(spec.run_id, 0) + (holder in workers)
    if holder in died or strikes[spec.run_id] >= 3:
        error = _death(holder, died.get(holder))
        on_result({"run_id": spec.run_id, "status": "crashed", "error": error, "skipped": False})
        return False
    return True


def _death(pid: int | None, code: int | None) -> str:
    if code is None:
        how = "died"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
        how = f"was killed by {name}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
    else:
        how = f"exited with code {code}"
    return (
        f"its worker process (pid {pid}) {how}; the run keeps its checkpoint: re-run the "
        "matrix to resume it"
    )


def _future_results(fut, job: tuple[Any, str]) -> list[Result]:
    """A finished job's results (one per run; a group's in seed order)."""
    try:
        result = fut.result()
    except Exception as err:  # noqa: BLE001 - reported per run, the matrix goes on
        error = f"{type(err).__name__}: {err}"
    else:
        return result if isinstance(result, list) else [result]
    from gapbench.benchmark.spec import RunSpec

    return [
        {
            "run_id": RunSpec.from_dict(spec_dict).run_id,
            "status": "crashed",
            "error": error,
            "skipped": False,
        }
        for spec_dict in _job_specs(job)
    ]


# -- Ray -----------------------------------------------------------------------------------
def import_ray():
    try:
        import ray
    except ImportError as err:
        raise RuntimeError(RAY_MISSING) from err
    return ray


class _ToRayQueue(logging.Handler):
    """In a Ray task: queue each gapbench record as (logger name, level, line) for the
    driver. ``put`` returns once the queue holds the line, so all of a run's lines are
    queued before its task returns; Ray's own forwarding of a worker's stderr lags, and
    ``ray.shutdown()`` cut off the last run's final lines."""

    def __init__(self, queue: Any) -> None:
        super().__init__()
        self.queue = queue
        self.addFilter(_RunPrefix())
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put((record.name, record.levelno, self.format(record)))
        except Exception:  # noqa: BLE001 - logging must not break the run
            self.handleError(record)


def _ray_entry(
    spec_dict: dict[str, Any],
    out: str,
    retry_failed: bool,
    label: str,
    threads: int,
    queue: Any,
    level: int,
    own_stop: str,
) -> Result:
    global _interrupted
    import torch

    torch.set_num_threads(threads)
    # on the "gapbench" logger, not the root: Ray's own records must not recurse into the
    # queue. Ray reuses worker processes, so drop a handler an earlier task left.
    logger = logging.getLogger("gapbench")
    for old in [h for h in logger.handlers if isinstance(h, _ToRayQueue)]:
        logger.removeHandler(old)
    logger.addHandler(_ToRayQueue(queue))
    logger.setLevel(level)
    logger.propagate = False  # the driver prints these lines: none to the worker's stderr
    _interrupted = _FileFlag(Path(out) / own_stop)  # the driver's Ctrl-C (run_ray)
    return execute_run(spec_dict, out, retry_failed, label)


class _FileFlag:
    """An interrupt flag that is a file: a Ray task's view of its driver's Ctrl-C."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()


def _drain(queue: Any) -> None:
    """In the driver: log the worker lines queued so far, with the loggers they came from."""
    for name, level, line in queue.get_nowait_batch(queue.qsize()):
        logging.getLogger(name).log(level, line)


def run_ray(
    jobs: list[tuple[dict[str, Any], str]],
    out: Path,
    workers: int,
    retry_failed: bool,
    on_result: Callable[[Result], None],
    address: str | None = None,
    cpus_per_run: int = 1,
) -> None:
    """Run (spec_dict, label) jobs as Ray tasks (see the module docstring).

    The first Ctrl-C or SIGTERM (called from the main thread) writes ``OUT/.stop-TOKEN``,
    this call's own request: the tasks reach the driver's signals through the folder only,
    which every node shares, and each polls its matrix's token beside the folder's
    ``OUT/STOP``, so other matrices writing to the folder go on. The running runs checkpoint
    where they stand, the others report "stopped" unstarted, the request is removed once
    all have returned, and KeyboardInterrupt is raised. A second signal cancels the tasks
    (their runs resume from the last periodic checkpoint)."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers * cpus_per_run, include_dashboard=False)
        started = True
    from ray.util.queue import Queue

    task = ray.remote(_ray_entry)
    out_abs = str(Path(out).resolve())
    lines = Queue(actor_options={"num_cpus": 0})  # the tasks' log lines (see _ToRayQueue)
    level = logging.getLogger("gapbench").getEffectiveLevel()
    refs = {}
    interrupted = threading.Event()

    own_stop = Path(out) / f".stop-{uuid.uuid4().hex[:12]}"  # this matrix's tasks only

    def stopping() -> None:
        own_stop.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")
        log.warning(
            "interrupted: the running runs checkpoint where they stand and no new run "
            "starts (Ctrl-C again to abort at once)"
        )

    try:
        for spec_dict, label in jobs:
            gpus = 1 if str(spec_dict.get("device", "cpu")).startswith("cuda") else 0
            ref = task.options(num_cpus=cpus_per_run, num_gpus=gpus, max_retries=2).remote(
                spec_dict, out_abs, retry_failed, label, cpus_per_run, lines, level, own_stop.name
            )
            refs[ref] = spec_dict
        pending = list(refs)
        with interrupts_as_stop(stopping, interrupted):
            while pending:
                # the timeout only paces the log lines of runs still training
                done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                _drain(lines)  # a finished task's lines are all queued: print them first
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - a crashed task, reported per run
                        from gapbench.benchmark.spec import RunSpec

                        result = {
                            "run_id": RunSpec.from_dict(refs[ref]).run_id,
                            "status": "crashed",
                            "error": f"{type(err).__name__}: {err}",
                            "skipped": False,
                        }
                    on_result(result)
    except BaseException:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            lines.shutdown()
        if started:
            ray.shutdown()
        own_stop.unlink(missing_ok=True)  # the tasks have returned or are cancelled
    if interrupted.is_set():
        raise KeyboardInterrupt


# -- a whole matrix ------------------------------------------------------------------------
def plan(matrix: Matrix, out: Path, retry_failed: bool) -> tuple[list[Any], dict[str, Result]]:
    """(runs to execute, results of the runs that are not executed: done, failed, running).

    Runs with a checkpoint come first, the others after them, each in matrix order: a
    restarted matrix finishes the runs it has spent compute on before it starts new ones.
    """
    from gapbench.benchmark.records import CHECKPOINT

    todo, known = [], {}
    for r in matrix.runs:
        st, summary = run_status(out / r.run_id)
        if st in ("done", "failed") and rerun_reason(out / r.run_id, r.spec, retry_failed) is None:
            known[r.run_id] = result_of(r.run_id, summary or {}, skipped=True)
            remove_stale_lock(out / r.run_id)
        elif st == "running":
            known[r.run_id] = {
                "run_id": r.run_id,
                "status": "running",
                "skipped": True,
                "error": holder(out / r.run_id),
            }
        else:
            todo.append(r)
    todo.sort(key=lambda r: not (out / r.run_id / CHECKPOINT).is_file())  # stable
    return todo, known


def run_matrix(
    matrix: Matrix,
    out: str | Path | None = None,
    executor: str = "local",
    workers: int | None = None,
    retry_failed: bool = False,
    ray_address: str | None = None,
    cpus_per_run: int | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_plan: Callable[[list[Any], dict[str, Result]], None] | None = None,
    seed_groups: bool | None = None,
) -> dict[str, Result]:
    """Run every run of ``matrix`` that has no complete record; return run_id -> result
    in matrix order. Writes ``OUT/matrix.json`` first, and clears a stop request left in
    ``OUT`` (a request made while it runs stops it: see the module docstring).
    ``seed_groups``: the local executor trains the seeds of one spec as one seed group (see
    the module docstring); None (the default) groups the runs on a GPU only, True on any
    device, False none."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if executor == "ray":
        import_ray()  # fail before anything is written
    out = Path(out or matrix.out)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if cpus_per_run is not None and cpus_per_run < 1:
        raise ValueError(f"cpus_per_run must be >= 1, got {cpus_per_run}")
    if executor == "local":  # Ray places GPU runs on the nodes that have one
        from gapbench.benchmark.spec import device_problem

        for device in sorted({r.spec.device for r in matrix.runs}):
            if problem := device_problem(device):
                raise ValueError(problem)
    out.mkdir(parents=True, exist_ok=True)
    if clear_stop(out):
        log.info("cleared the stop request in %s (gapbench matrix stop): running", out)
    write_manifest(matrix, out)
    todo, results = plan(matrix, out, retry_failed)
    if on_plan is not None:
        on_plan(todo, results)
    labels = {r.run_id: r.label for r in matrix.runs}

    def collect(result: Result) -> None:
        results[result["run_id"]] = result
        if result["status"] not in ("ok", "running", "stopped"):
            log.warning(
                "run %s (%s) %s: %s",
                result["run_id"],
                labels.get(result["run_id"]),
                result["status"],
                result.get("error"),
            )
        if on_result is not None:
            on_result(result)

    if todo:
        if executor == "local" and seed_groups is not False:
            jobs = seed_group_jobs(todo, out, on_cpu=bool(seed_groups))
        else:
            jobs = [(r.spec.to_dict(), r.label) for r in todo]
        n = workers or min(len(jobs), os.cpu_count() or 1)
        if executor == "local":
            run_local(jobs, out, min(n, len(jobs)), retry_failed, collect, cpus_per_run)
        else:
            run_ray(jobs, out, n, retry_failed, collect, ray_address, cpus_per_run or 1)
    return {
        r.run_id: results.get(r.run_id, {"run_id": r.run_id, "status": "missing"})
        for r in matrix.runs
    }


__all__ = [
    "EXECUTORS",
    "RAY_MISSING",
    "execute_group",
    "execute_run",
    "import_ray",
    "plan",
    "result_of",
    "run_local",
    "run_matrix",
    "run_ray",
    "seed_group_jobs",
    "worker_threads",
]
