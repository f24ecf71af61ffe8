"""The command line's own inputs (issue 20.8, CLI side; issue 21.9): a bad option value is
one line on stderr (exit 2) naming the value and the valid choices, never a traceback, and
``--json`` prints machine-readable JSON and nothing else on stdout."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gapbench.benchmark.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--threads", "-1", "greater than or equal to 1"),
        ("--task", "foo", "valid tasks: halfcheetah"),
        ("--device", "foo", "valid: cpu, cuda, cuda:N"),
        ("--device", "cuda:x", "valid: cpu, cuda, cuda:N"),
    ],
)
def test_bench_bad_option_is_one_line(option, value, valid):
    result = runner.invoke(app, ["bench", "--algo", "sac", "--seconds", "0.01", option, value])
    assert result.exit_code == 2
    assert valid in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["report", "tune"])
def test_report_and_tune_refuse_an_out_that_is_not_a_folder(tmp_path, command):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "sub"
    args = {
        "report": ["report", str(tmp_path), "--out", str(out)],
        "tune": ["tune", "--algo", "sac", "--task", "hopper", "--out", str(out)],
    }[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("file is not a directory; valid: a writable folder")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # nothing written
