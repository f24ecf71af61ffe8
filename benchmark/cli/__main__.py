"""``python -m gapbench.benchmark.cli``: the ``gapbench`` command."""

from gapbench.benchmark.cli import main

main()
