"""Issue 21: defaults and outputs that fit how researchers already work (pasted help
snippets parse, CSVs load cleanly in pandas, a broken plug-in cannot break the tool,
one torch thread per run, one meaning of "final normalized score")."""

from __future__ import annotations

import re

import yaml
from typer.testing import CliRunner

from benchmark import cli_matrix
from benchmark.cli import app
from benchmark.matrix import load

runner = CliRunner()


def _indented_blocks(text: str) -> list[str]:
    blocks = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if lines and all(line.startswith("    ") for line in lines if line.strip()):
            blocks.append("\n".join(line[4:] for line in lines))
    return blocks


def test_matrix_help_yaml_parses_when_pasted(tmp_path):
    """Every YAML block in `matrix run --help` is a valid matrix file once pasted."""
    yaml_blocks = [b for b in _indented_blocks(cli_matrix.DOCS) if re.match(r"\w+:", b)]
    assert yaml_blocks, "the help shows a matrix file"
    for block in yaml_blocks:
        data = yaml.safe_load(block)
        assert {"tasks", "algorithms"} <= set(data)
        path = tmp_path / "pasted.yaml"
        path.write_text(block)
        matrix = load(path, out=tmp_path / "out", check_datasets=False)
        assert len(matrix) > 0


def test_matrix_yaml_error_is_clean(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(  # the help's old snippet: an unquoted {task} in a flow list
        "tasks: [hopper]\ndatasets: [gapbench/{task}/medium-v0]\nalgorithms: {cql: {}}\n"
    )
    result = runner.invoke(app, ["matrix", "run", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert "invalid YAML" in result.stderr
    assert "\\[" not in result.stderr  # rich markup escaped twice
    assert "quote values" in result.stderr
