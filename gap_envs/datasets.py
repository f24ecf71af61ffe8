"""Offline datasets of *real* transitions: built the way D4RL built its MuJoCo datasets,
stored as Minari datasets, and read back from gapbench, Minari or D4RL files.

H2O and the offline baselines learn from a fixed log of transitions gathered on the real
system. D4RL cannot be downloaded here, so :mod:`gapbench.benchmark.datasets_build` rolls
behaviour policies out on the real system (the nominal MuJoCo task, or ``real_gap`` applied
to it) and this module writes the log with Minari (:func:`write_episodes`). :func:`load`
reads any of

* a gapbench id, ``gapbench/<task>/<quality>-v0``;
* any Minari dataset id already present locally (e.g. Farama's ``mujoco/halfcheetah/medium-v0``
  after ``minari download``; nothing is ever downloaded here);
* a path to a D4RL-layout HDF5 file (``observations``, ``actions``, ``rewards``,
  ``terminals``, ``timeouts`` and optionally ``next_observations``).

Ids and storage: ``gapbench/<task>/<quality>-v0`` on the nominal real system; with a
non-nominal ``real_gap`` the task part carries a slug of the canonical gap string:
``gapbench/<task>-<slug>/<quality>-v0``, where each ``key=value`` becomes ``key_value`` with
``.`` -> ``_`` in keys, ``.`` -> ``p`` and ``-`` -> ``m`` in numbers, joined by ``-`` (e.g.
``gravity=2.0,friction=0.3`` -> ``halfcheetah-gravity_2-friction_0p3``). Datasets live in
:func:`data_dir`: an explicit argument, else ``$GAPBENCH_DATA_DIR``, else Minari's own
(``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``). Each dataset's metadata holds D4RL's
reference scores (``ref_min_score``/``ref_max_score``, so :func:`minari.get_normalized_score`
works; it returns fractions, gapbench's :func:`gap_envs.normalized_score` percent), and under
``"gapbench"`` its card (:func:`card`): size, episodes, returns, normalized score, snapshots,
seed, real gap, build command and versions.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gapbench.gap_envs.atomic import pid_alive
from gapbench.gap_envs.spec import GapSpec
from gapbench.gap_envs.tasks import get_task

DATA_DIR_ENV = "GAPBENCH_DATA_DIR"
MINARI_ENV = "MINARI_DATASETS_PATH"
QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
D4RL_SIZE = 1_000_000
META_KEY = "gapbench"
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
STAGING_PREFIX = ".gapbench-staging-"
D4RL_INFOS = ("qpos", "qvel")  # kept from a D4RL file's infos/ group when present


class DatasetError(ValueError):
    """A dataset that cannot be built, found, read or used for a task."""


class DatasetNotFoundError(DatasetError):
    """The dataset is not present locally."""


class DatasetExistsError(DatasetError):
    """Building would overwrite an existing dataset (pass overwrite=True)."""


# =============================================================================================
# transitions
# =============================================================================================
@dataclass(eq=False)
class Transitions:
    """A flat log of transitions as numpy arrays (leading axis = transition).

    ``terminals`` marks true terminations (no bootstrap), ``timeouts`` the other ends of an
    episode (time limit, or where the log cut it): ``next_observations`` is real there.
    """

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # per-transition extras, row-aligned with the arrays above: D4RL's infos/qpos and
    # infos/qvel (as "qpos", "qvel"), which let a user reset the simulator to a logged state
    infos: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        self.next_observations = np.asarray(self.next_observations, dtype=np.float32)
        self.terminals = np.asarray(self.terminals).reshape(-1).astype(bool)
        self.timeouts = np.asarray(self.timeouts).reshape(-1).astype(bool)
        n = len(self.observations)
        if self.observations.ndim != 2 or self.actions.ndim != 2:
            raise DatasetError(
                f"observations and actions must be 2-D, got shapes {self.observations.shape} "
                f"and {self.actions.shape}"
            )
        if self.next_observations.shape != self.observations.shape:
            raise DatasetError(
                f"next_observations {self.next_observations.shape} != observations "
                f"{self.observations.shape}"
            )
        for name in ("actions", "rewards", "terminals", "timeouts"):
            if len(getattr(self, name)) != n:
                raise DatasetError(f"{name} has {len(getattr(self, name))} rows, expected {n}")
        for name, value in self.infos.items():
            if len(value) != n:
                raise DatasetError(f"infos/{name} has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def ends(self) -> np.ndarray:
        """The last transition of each episode (termination or time-out)."""
        return self.terminals | self.timeouts

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode that ends in the log (like
        ``TensorBuffer.episode_returns``: the whole log's sum when none ends)."""
        return _segment_returns(self.rewards, self.ends)


def _segment_returns(rewards: np.ndarray, ends: np.ndarray) -> np.ndarray:
    rew = np.asarray(rewards, dtype=np.float64)
    idx = np.flatnonzero(ends)
    if len(idx) == 0:
        return np.array([rew.sum()]) if len(rew) else np.zeros(0)
    cums = np.concatenate([[0.0], np.cumsum(rew)])
    starts = np.concatenate([[0], idx[:-1] + 1])
    return cums[idx + 1] - cums[starts]


# =============================================================================================
# data directory, ids
# =============================================================================================
def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``path`` if given, else ``$GAPBENCH_DATA_DIR``, else Minari's
    default (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    return _resolve_data_dir(path)


def _resolve_data_dir(path: str | os.PathLike | None) -> Path:
    # Absolute: Minari joins a relative $MINARI_DATASETS_PATH onto paths it already
    # built from it (a relative --data-dir once doubled the staging path).
    if path:
        return Path(path).expanduser().absolute()
    for var in (DATA_DIR_ENV, MINARI_ENV):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser().absolute()
    return Path.home() / ".minari" / "datasets"


@contextlib.contextmanager
def minari_datasets_path(path: str | os.PathLike) -> Iterator[Path]:
    """Point Minari at ``path`` (``$MINARI_DATASETS_PATH``) inside the block, then restore."""
    old = os.environ.get(MINARI_ENV)
    os.environ[MINARI_ENV] = os.fspath(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop(MINARI_ENV, None)
        else:
            os.environ[MINARI_ENV] = old


def _number_slug(value: float) -> str:
    text = repr(float(value))
    if text.endswith(".0"):
        text = text[:-2]
    return text.replace(".", "p").replace("-", "m").replace("+", "")


def gap_slug(gap: GapSpec | str | dict | None) -> str:
    """The id-safe form of a gap spec ('' for nominal): ``gravity=2.0,friction=0.3`` ->
    ``gravity_2-friction_0p3``."""
    spec = GapSpec.parse(gap)
    parts = []
    for key, value in spec.to_dict().items():
        safe_key = re.sub(r"[^A-Za-z0-9_]", "_", key)
        parts.append(f"{safe_key}_{_number_slug(value)}")
    return "-".join(parts)


_ID_RE = re.compile(
    r"gapbench/(?P<task>[A-Za-z0-9]+)(?:-(?P<gap>[-\w]+))?/(?P<quality>[-\w]+?)-v(?P<version>\d+)"
)


def parse_id(did: str) -> dict[str, Any] | None:
    """``{"task", "gap_slug", "quality", "version"}`` of a gapbench id, else None."""
    m = _ID_RE.fullmatch(did)
    if m is None:
        return None
    return {
        "task": m["task"],
        "gap_slug": m["gap"] or "",
        "quality": m["quality"],
        "version": int(m["version"]),
    }


def check_quality(quality: str) -> None:
    if quality not in QUALITIES:
        raise DatasetError(f"unknown quality {quality!r}; valid qualities: {', '.join(QUALITIES)}")


def _gapbench_version() -> str:
    try:
        return importlib.metadata.version("gapbench")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def _minari():
    import minari

    return minari


# =============================================================================================
# episodes, as a builder hands them to write_episodes
# =============================================================================================
@dataclass
class Episode:
    """One stored episode (or the piece of one that a size limit cut)."""

    observations: np.ndarray  # (T+1, obs_dim): the T+1-th is the true final observation
    actions: np.ndarray  # (T, act_dim)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool; the last is True for time-outs and cuts
    cut: bool  # ended by the size limit, not by the env

    def __len__(self) -> int:
        return len(self.rewards)


# =============================================================================================
# cards
# =============================================================================================
def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def return_stats(
    complete: np.ndarray, partial: np.ndarray, ref: tuple[float, float] | None
) -> dict[str, Any]:
    returns, over = (
        (complete, "complete episodes") if len(complete) else (partial, "partial episodes")
    )
    if len(returns) == 0:
        mean = std = lo = hi = None
    else:
        mean, std = float(np.mean(returns)), float(np.std(returns))
        lo, hi = float(np.min(returns)), float(np.max(returns))
    score = None
    if mean is not None and ref is not None:
        score = 100.0 * (mean - ref[0]) / (ref[1] - ref[0])
    return {
        "return_mean": _finite(mean),
        "return_std": _finite(std),
        "return_min": _finite(lo),
        "return_max": _finite(hi),
        "returns_of": over,
        "normalized_score": _finite(score),
    }


# =============================================================================================
# writing (the rollouts that produce the episodes: gapbench.benchmark.datasets_build)
# =============================================================================================


def _exists(root: Path, did: str) -> bool:
    return (root / did / "data").exists()


def _env_spec(task: str, gap: GapSpec):
    import dataclasses

    import gymnasium as gym

    from gapbench.gap_envs.envs import register_envs

    register_envs()
    spec = gym.spec(get_task(task).gapbench_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "gap": str(gap)})


def write_episodes(
    root: Path,
    did: str,
    episodes: list[Episode],
    info: dict[str, Any],
    t: Any,
    gap: GapSpec,
    overwrite: bool,
) -> None:
    """Write into a hidden staging folder of ``root``, then move it into place."""
    minari = _minari()
    from minari.data_collector import EpisodeBuffer

    root.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(root)
    token = uuid.uuid4().hex[:12]
    # host and pid in the name let a later build tell a killed build's leftovers from a
    # build still writing
    staging = root / f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{token}"
    old = root / f".gapbench-replaced-{token}"
    try:
        buffers = [
            EpisodeBuffer(
                observations=ep.observations,
                actions=ep.actions,
                rewards=ep.rewards,
                terminations=ep.terminations,
                truncations=ep.truncations,
            )
            for ep in episodes
        ]
        spec = _env_spec(info["task"], gap)
        gap_text = f"real gap {gap}" if not gap.is_nominal else "the nominal real system"
        with minari_datasets_path(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = minari.create_dataset_from_buffers(
                dataset_id=did,
                buffer=buffers,
                env=spec,
                eval_env=spec,
                algorithm_name=f"gapbench/{info['quality']}",
                author="gapbench",
                ref_min_score=t.random_score,
                ref_max_score=t.expert_score,
                description=(
                    f"gapbench {info['quality']} dataset of {info['task']}: {info['size']} "
                    f"transitions rolled out on {gap_text} (seed {info['seed']}). "
                    f"Built by: {info['command']}"
                ),
                data_format="hdf5",
            )
            ds.storage.update_metadata({META_KEY: info})
        target = root / did
        if _exists(root, did) and not overwrite:
            raise DatasetExistsError(f"dataset {did} appeared in {root} while building")
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_namespace_metadata(staging, root, did)
        replaced = target.exists()
        if replaced:
            os.replace(target, old)
        try:
            os.replace(staging / did, target)
        except BaseException:
            if replaced:
                os.replace(old, target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(root: Path) -> list[Path]:
    """Remove the staging folders that killed builds left in ``root`` (their process, on
    this host, is gone; those of the older ``<token>``-only form too). Returns them."""
    removed = []
    for path in root.glob(f"{STAGING_PREFIX}*"):
        host, _, rest = path.name[len(STAGING_PREFIX) :].rpartition("-")[0].rpartition("-")
        pid = rest if host else ""
        if host and host != socket.gethostname():
            continue  # another machine's build on a shared folder: it may still be running
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _copy_namespace_metadata(staging: Path, root: Path, did: str) -> None:
    """Minari marks namespace folders with ``namespace_metadata.json``: keep that at home."""
    parts = did.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        rel = Path(*parts[:i]) / "namespace_metadata.json"
        if (staging / rel).exists() and not (root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staging / rel, root / rel)


# =============================================================================================
# loading
# =============================================================================================
def _looks_like_id(source: str) -> bool:
    from minari.dataset.minari_dataset import DATASET_ID_RE

    return DATASET_ID_RE.fullmatch(source) is not None and not source.endswith((".hdf5", ".h5"))


def _not_found(source: str, root: Path) -> DatasetNotFoundError:
    hint = (
        "download it with `minari download "
        f"{source}` (needs internet) into that folder, or point --data-dir/{DATA_DIR_ENV} at "
        "the folder that holds it"
    )
    parsed = parse_id(source)
    if parsed:
        hint = (
            f"build it with `gapbench datasets build --task {parsed['task']} --quality "
            f"{parsed['quality']}{' --real-gap ...' if parsed['gap_slug'] else ''}`, or point "
            f"--data-dir/{DATA_DIR_ENV} at the folder that holds it"
        )
    return DatasetNotFoundError(
        f"dataset {source!r} is not present locally in {root} (nothing is downloaded); {hint}"
    )


def exists(
    source: str | os.PathLike, task: str | None = None, data_dir: str | os.PathLike | None = None
) -> bool:
    """Whether :func:`load` finds ``source`` locally (without reading its data). With
    ``task``, a dataset that records another task raises :class:`DatasetError`."""
    src = os.fspath(source)
    data_path = _minari_data_path(src, _resolve_data_dir(data_dir))
    if data_path is None:
        path = Path(src).expanduser()
        if path.is_file() and task is not None:
            _check_hdf5_dims(path, task)
        return path.is_file()
    if task is not None:
        get_task(task)
        try:
            meta = json.loads((data_path / "metadata.json").read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read the metadata of {data_path}: {err}") from None
        ours = meta.get(META_KEY)
        if isinstance(ours, dict) and ours.get("task") not in (None, task):
            raise DatasetError(f"dataset {src} was built for task {ours['task']!r}, not {task!r}")
    return True


def _check_hdf5_dims(path: Path, task: str) -> None:
    """The observation and action sizes of a D4RL-layout file against ``task``, read from
    the HDF5 headers only (no data), so a matrix refuses a wrong file before any run."""
    import h5py

    t = get_task(task)
    try:
        with h5py.File(path, "r") as f:
            shapes = {k: f[k].shape for k in ("observations", "actions") if k in f}
    except Exception as err:
        raise DatasetError(f"cannot read {path}: not a readable HDF5 file ({err})") from None
    if len(shapes) < 2:
        return  # load() names the missing keys
    dims = tuple(int(np.prod(shapes[k][1:])) for k in ("observations", "actions"))
    if dims != (t.obs_dim, t.act_dim):
        raise DatasetError(
            f"dataset {path} has observations of size {dims[0]} and actions of size {dims[1]}, "
            f"but task {task!r} needs {t.obs_dim} and {t.act_dim}"
        )


def _minari_data_path(source: str, root: Path) -> Path | None:
    """The ``data`` folder of a Minari id in ``root`` or of a Minari dataset folder."""
    if _looks_like_id(source) and (root / source / "data" / "metadata.json").exists():
        return root / source / "data"
    path = Path(source).expanduser()
    for cand in (path / "data", path):
        if (cand / "metadata.json").is_file():
            return cand
    return None


def _read_minari(data_path: Path) -> Transitions:
    minari = _minari()
    import gymnasium as gym

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = minari.MinariDataset(data_path)
            meta = ds.storage.metadata
        obs_space, act_space = ds.observation_space, ds.action_space
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            raise DatasetError(
                f"dataset at {data_path} has {type(obs_space).__name__} observations and "
                f"{type(act_space).__name__} actions; only flat Box spaces are supported"
            )
        if len(obs_space.shape) != 1 or len(act_space.shape) != 1:
            raise DatasetError(
                f"dataset at {data_path} has observations of shape {obs_space.shape} and actions "
                f"of shape {act_space.shape}; only flat (1-D) Box spaces are supported"
            )
        if meta.get("data_format") == "hdf5":
            episodes = _hdf5_episodes(data_path / "main_data.hdf5", ds.episode_indices)
        else:
            episodes = ds.storage.get_episodes(ds.episode_indices)
        obs, act, rew, nxt, term, tout = [], [], [], [], [], []
        for ep in episodes:
            o = np.asarray(ep["observations"]).reshape(len(ep["observations"]), -1)
            a = np.asarray(ep["actions"]).reshape(len(ep["actions"]), -1)
            steps = len(a)
            if steps == 0:
                continue
            if len(o) != steps + 1:
                raise DatasetError(
                    f"episode {ep['id']} has {len(o)} observations for {steps} actions"
                )
            te = np.asarray(ep["terminations"], dtype=bool).reshape(-1)
            tr = np.asarray(ep["truncations"], dtype=bool).reshape(-1)
            if not (te[-1] or tr[-1]):  # an episode cut short: its next observation is real
                tr = tr.copy()
                tr[-1] = True
            obs.append(o[:-1])
            nxt.append(o[1:])
            act.append(a)
            rew.append(np.asarray(ep["rewards"]).reshape(-1))
            term.append(te)
            tout.append(tr & ~te)
    except DatasetError:
        raise
    except Exception as err:  # corrupt hdf5/arrow, malformed metadata, ...
        raise DatasetError(f"cannot read the Minari dataset at {data_path}: {err}") from None
    if not obs:
        raise DatasetError(f"the Minari dataset at {data_path} holds no transitions")
    tr_ = Transitions(
        np.concatenate(obs),
        np.concatenate(act),
        np.concatenate(rew),
        np.concatenate(nxt),
        np.concatenate(term),
        np.concatenate(tout),
    )
    tr_.metadata = {
        "source": "minari",
        "dataset_id": meta.get("dataset_id"),
        "path": str(data_path),
        "env_id": _env_id(meta),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        META_KEY: meta.get(META_KEY),
    }
    return tr_


_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def _hdf5_episodes(path: Path, indices: Any) -> Iterator[dict[str, Any]]:
    """Minari's HDF5 layout (``episode_<i>/<key>``) read with h5py's low-level calls: about
    twice as fast as ``MinariStorage.get_episodes`` for logs of many short episodes."""
    import h5py

    with h5py.File(path, "r") as f:
        for i in indices:
            gid = h5py.h5g.open(f.id, f"episode_{int(i)}".encode())
            ep: dict[str, Any] = {"id": int(i)}
            for key in _EPISODE_KEYS:
                dset = h5py.h5d.open(gid, key.encode())
                arr = np.empty(dset.get_space().shape, dtype=dset.dtype)
                if arr.size:
                    dset.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
                ep[key] = arr
            yield ep


def _env_id(meta: dict[str, Any]) -> str | None:
    text = meta.get("env_spec")
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text).get("id")
    except ValueError:
        return None


def _read_d4rl_hdf5(path: Path) -> Transitions:
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as err:
        raise DatasetError(f"cannot read {path}: not a readable HDF5 file ({err})") from None
    try:
        with f:
            missing = [k for k in D4RL_KEYS if k not in f]
            if missing:
                raise DatasetError(
                    f"{path} is not a D4RL-layout file: it lacks {', '.join(missing)} "
                    f"(expected {', '.join(D4RL_KEYS)}, optional next_observations)"
                )
            data = {k: np.asarray(f[k][()]) for k in (*D4RL_KEYS, "next_observations") if k in f}
            infos = {k: np.asarray(f[f"infos/{k}"][()]) for k in D4RL_INFOS if f"infos/{k}" in f}
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    obs = data["observations"].reshape(len(data["observations"]), -1)
    n = len(obs)
    for k in ("actions", "rewards", "terminals", "timeouts"):
        if len(data[k]) != n:
            raise DatasetError(f"{path}: {k!r} has {len(data[k])} rows but observations has {n}")
    for k, v in infos.items():
        if len(v) != n:
            raise DatasetError(f"{path}: 'infos/{k}' has {len(v)} rows but observations has {n}")
    act = data["actions"].reshape(n, -1)
    rew = data["rewards"].reshape(n)
    term = data["terminals"].reshape(n).astype(bool)
    tout = data["timeouts"].reshape(n).astype(bool) & ~term
    if "next_observations" in data:
        nxt = data["next_observations"].reshape(n, -1)
        if nxt.shape != obs.shape:
            raise DatasetError(f"{path}: next_observations {nxt.shape} != observations {obs.shape}")
        tr = Transitions(obs, act, rew, nxt, term, tout, infos=infos)
    else:
        # As D4RL's qlearning_dataset: next_obs is the next row; a time-out row (and the last
        # row) has no successor and is dropped. A terminal keeps the next row as a placeholder
        # next_obs (it is never bootstrapped from). The row before a dropped one becomes its
        # episode's last transition, so it is flagged as a time-out.
        idx = np.arange(n)
        keep = (idx < n - 1) & ~tout
        new_tout = np.zeros(n, dtype=bool)
        dropped = np.flatnonzero(~keep)
        prev = dropped[dropped > 0] - 1
        prev = prev[keep[prev] & ~term[prev]]
        new_tout[prev] = True
        nxt = obs[np.minimum(idx + 1, n - 1)]
        tr = Transitions(
            obs[keep],
            act[keep],
            rew[keep],
            nxt[keep],
            term[keep],
            new_tout[keep],
            infos={k: v[keep] for k, v in infos.items()},
        )
    tr.metadata = {"source": "d4rl-hdf5", "path": str(path)}
    return tr


def _check_task(tr: Transitions, task: str, name: str) -> None:
    t = get_task(task)
    if (tr.obs_dim, tr.act_dim) != (t.obs_dim, t.act_dim):
        raise DatasetError(
            f"dataset {name} has observations of size {tr.obs_dim} and actions of size "
            f"{tr.act_dim}, but task {task!r} needs {t.obs_dim} and {t.act_dim}"
        )
    ours = tr.metadata.get(META_KEY)
    if isinstance(ours, dict) and ours.get("task") not in (None, task):
        raise DatasetError(f"dataset {name} was built for task {ours['task']!r}, not {task!r}")
    env_id = tr.metadata.get("env_id")
    if env_id and not isinstance(ours, dict):
        base = lambda s: s.split("/")[-1].split("-v")[0].lower()  # noqa: E731
        if base(env_id) != base(t.gym_id):
            raise DatasetError(
                f"dataset {name} was collected on {env_id!r}, not on task {task!r} ({t.gym_id})"
            )


def load(
    source: str | os.PathLike,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Transitions:
    """Read a dataset: a gapbench or other local Minari id (looked up in :func:`data_dir`),
    a Minari dataset folder, or a D4RL-layout HDF5 file. With ``task``, the observation
    and action sizes (and the recorded task/env, when known) must match it."""
    src = os.fspath(source)
    root = _resolve_data_dir(data_dir)
    path = Path(src).expanduser()
    data_path = _minari_data_path(src, root)
    if data_path is not None:
        tr = _read_minari(data_path)
    elif path.is_file():
        tr = _read_d4rl_hdf5(path)
    elif src.endswith((".hdf5", ".h5")) or (os.sep in src and path.suffix):
        raise DatasetNotFoundError(f"dataset file {path} does not exist")
    elif _looks_like_id(src):
        raise _not_found(src, root)
    else:
        raise DatasetNotFoundError(
            f"{src!r} is neither a dataset id present in {root} nor a file; ids look like "
            "gapbench/<task>/<quality>-v0"
        )
    if task is not None:
        _check_task(tr, task, src)
    _check_finite(tr, src)
    return tr


def _check_finite(tr: Transitions, name: str) -> None:
    """A NaN or inf in the log would poison every update that samples it: refuse it."""
    for key in ("observations", "actions", "rewards", "next_observations"):
        bad = ~np.isfinite(getattr(tr, key))
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])
            raise DatasetError(
                f"dataset {name} has {int(bad.sum())} non-finite value(s) (NaN/inf) in {key}, "
                f"first at row {row}; valid: finite numbers only"
            )


def save_d4rl_hdf5(
    tr: Transitions, path: str | os.PathLike, next_observations: bool = True
) -> Path:
    """Write ``tr`` as a D4RL-layout HDF5 file (rows = transitions)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["observations"] = tr.observations
        f["actions"] = tr.actions
        f["rewards"] = tr.rewards
        f["terminals"] = tr.terminals
        f["timeouts"] = tr.timeouts
        if next_observations:
            f["next_observations"] = tr.next_observations
    return path


# =============================================================================================
# listing, cards
# =============================================================================================
def _light_card(did: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": did,
        "source": "minari",
        "task": None,
        "quality": None,
        "size": meta.get("total_steps"),
        "episodes": meta.get("total_episodes"),
        "return_mean": None,
        "normalized_score": None,
        "seed": None,
        "real_gap": None,
        "env_id": _env_id(meta),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
    }


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The cards of every Minari dataset in :func:`data_dir`, sorted by id: gapbench's full
    cards (read from their metadata), other datasets' size and episodes only."""
    root = _resolve_data_dir(data_dir)
    if not root.is_dir():
        return []
    minari = _minari()
    with minari_datasets_path(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = minari.list_local_datasets()
    out = []
    for did, meta in local.items():
        ours = meta.get(META_KEY)
        out.append(dict(ours, id=did) if isinstance(ours, dict) else _light_card(did, meta))
    # Minari skips a dataset whose metadata it cannot read; list it with its problem instead,
    # so a damaged dataset is seen (and rebuilt) rather than silently missing.
    for data in sorted(root.rglob("data")):
        did = data.parent.relative_to(root).as_posix()
        hidden = any(part.startswith(".") for part in data.relative_to(root).parts)
        if data.is_dir() and did not in local and not hidden and did != ".":
            out.append({**_light_card(did, {}), "problem": _metadata_problem(data, did)})
    return sorted(out, key=lambda c: c["id"])


def _metadata_problem(data_path: Path, did: str) -> str:
    try:
        meta = json.loads((data_path / "metadata.json").read_text())
    except (OSError, ValueError) as err:
        return f"unreadable metadata.json: {err}"
    if not isinstance(meta, dict) or meta.get("dataset_id") != did:
        found = meta.get("dataset_id") if isinstance(meta, dict) else None
        return f"metadata.json names dataset {found!r}, not {did!r}"
    return "metadata.json is not a valid Minari metadata file"


def health(data_path: Path, meta: dict[str, Any]) -> str | None:
    """What is wrong with a Minari dataset's data file, checked cheaply (the HDF5 opens,
    holds the episodes and steps its metadata promises, its last episode reads), or None.
    A build killed while copying, or a truncated download, shows here."""
    if meta.get("data_format", "hdf5") != "hdf5":
        return None
    import h5py

    path = data_path / "main_data.hdf5"
    try:
        with h5py.File(path, "r") as f:
            names = [n for n in f if n.startswith("episode_")]
            steps = sum(f[n]["rewards"].shape[0] for n in names)
            if names:
                last = max(names, key=lambda n: int(n.split("_")[1]))
                for key in _EPISODE_KEYS:
                    np.asarray(f[last][key][()])
    except Exception as err:
        return f"cannot read {path}: {err}"
    want = (meta.get("total_episodes"), meta.get("total_steps"))
    if want != (len(names), steps):
        return (
            f"{path} holds {len(names)} episodes and {steps} steps, but its metadata says "
            f"{want[0]} and {want[1]}"
        )
    return None


def card(dataset_id: str, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A dataset's card: size, episodes, return mean/std/min/max over complete episodes, the
    mean's normalized score, behaviour snapshots, seed, real gap and build command. Stored at
    build time for gapbench datasets; computed from the data for other Minari datasets and
    D4RL-layout files."""
    root = _resolve_data_dir(data_dir)
    data_path = _minari_data_path(dataset_id, root)
    if data_path is not None:
        try:
            meta = json.loads((data_path / "metadata.json").read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read the metadata of {data_path}: {err}") from None
        if isinstance(meta.get(META_KEY), dict):
            stored = dict(meta[META_KEY], id=meta.get("dataset_id", dataset_id))
            return {**stored, "problem": health(data_path, meta)}
    tr = load(dataset_id, data_dir=root)
    meta = tr.metadata
    ends = tr.ends
    returns = _segment_returns(tr.rewards, ends) if ends.any() else np.zeros(0)
    partial = _segment_returns(tr.rewards, ends)
    ref = None
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        ref = (float(meta["ref_min_score"]), float(meta["ref_max_score"]))
    task = _task_of_env(meta.get("env_id"))
    if ref is None and task is not None:
        ref = (get_task(task).random_score, get_task(task).expert_score)
    return {
        "id": meta.get("dataset_id") or dataset_id,
        "source": meta["source"],
        "task": task,
        "quality": None,
        "size": len(tr),
        "episodes": int(ends.sum()),
        "complete_episodes": int(ends.sum()),
        **return_stats(returns, partial, ref),
        "ref_min_score": ref[0] if ref else None,
        "ref_max_score": ref[1] if ref else None,
        "snapshots": None,
        "seed": None,
        "real_gap": None,
        "command": None,
        "env_id": meta.get("env_id"),
        "path": meta.get("path"),
    }


def _task_of_env(env_id: str | None) -> str | None:
    if not env_id:
        return None
    from gapbench.gap_envs.tasks import TASKS

    base = env_id.split("/")[-1].split("-v")[0].lower()
    for name, t in TASKS.items():
        if t.gym_id.split("-v")[0].lower() == base:
            return name
    return None


__all__ = [
    "QUALITIES",
    "DatasetError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "Episode",
    "Transitions",
    "card",
    "check_quality",
    "data_dir",
    "exists",
    "gap_slug",
    "list_datasets",
    "load",
    "minari_datasets_path",
    "parse_id",
    "return_stats",
    "save_d4rl_hdf5",
    "write_episodes",
]
