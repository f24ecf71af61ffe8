"""Developer sessions: ``nox`` runs the fast tests; ``nox -s lint bench slow demo reference``.

Sessions reuse the repository's ``.venv`` (made by the README's set-up), so nothing
is installed twice and no session downloads a CUDA build of torch.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"  # run in the active/.venv interpreter
VENV_BIN = ".venv/bin/"


@nox.session
def tests(session: nox.Session) -> None:
    """Fast test suite (the default; what CI runs)."""
    session.run(f"{VENV_BIN}pytest", "-n", "2", *session.posargs, external=True)


@nox.session
def slow(session: nox.Session) -> None:
    """Long learning checks (minutes to hours on 2 cores)."""
    session.run(f"{VENV_BIN}pytest", "-m", "slow", "-s", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    session.run(f"{VENV_BIN}ruff", "check", ".", external=True)
    session.run(f"{VENV_BIN}ruff", "format", "--check", ".", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Updates/s of every algorithm, env steps/s, evaluation speed-up (pytest-benchmark)."""
    session.run(
        f"{VENV_BIN}pytest",
        "perf",
        "--benchmark-only",
        "--benchmark-enable",
        "-s",
        "-p",
        "no:xdist",
        "-o",
        "addopts=",
        "--benchmark-columns=mean,ops,rounds",
        *session.posargs,
        external=True,
    )


@nox.session
def reference(session: nox.Session) -> None:
    """One update of H2O, CQL, SAC, IQL, BC and TD3+BC next to the reference
    implementations, imported from local clones: GAPBENCH_H2O_REPO (t6-thu/H2O),
    GAPBENCH_CQL_REPO (young-geng/CQL), GAPBENCH_CORL_REPO (tinkoff-ai/CORL: IQL, BC,
    TD3+BC), GAPBENCH_ODRL_REPO (OffDynamicsRL/off-dynamics-rl: PAR's default form) and
    GAPBENCH_PAR_REPO (dmksjfl/PAR: the authors' online PAR) and GAPBENCH_VGDF_REPO
    (Kavka1/VGDF: the authors' VGDF). ``scripts/check_mutations.py``
    re-checks that the H2O to TD3+BC tests fail for a reviewer's mutations of the defaults."""
    tests = ["tests/test_authors_h2o.py", "tests/test_authors_cql.py", "tests/test_authors_iql.py",
             "tests/test_authors_bc.py", "tests/test_authors_td3bc.py",
             "tests/test_authors_par.py", "tests/test_authors_vgdf.py"]  # fmt: skip
    session.run(f"{VENV_BIN}pytest", *tests, "-rs", "-p", "no:xdist", *session.posargs,
                external=True)  # fmt: skip


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job."""
    session.run("bash", "scripts/demo.sh", external=True)


@nox.session(venv_backend="venv")
def crosscheck(session: nox.Session) -> None:
    """Compare analysis/stats.py with rliable 1.2.0 in a fresh, isolated env (needs PyPI).

    rliable does not import next to pandas 3, so this session builds its own venv under
    .nox/ with versions it does import with, and loads ``analysis/stats.py`` by path (not
    the gapbench package, which would pull in torch and MuJoCo).
    """
    session.install("numpy>=1.26,<2", "pandas>=2.1,<2.2", "scipy<1.14", "rliable==1.2.0")
    session.run("python", "tests/support/crosscheck_rliable.py", *session.posargs)
