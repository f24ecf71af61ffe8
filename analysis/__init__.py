"""Post-hoc analysis of gapbench results: aggregate statistics and plots."""
