#!/usr/bin/env bash
# The main job: a small but real sim-to-real comparison on halfcheetah, end to end.
#   1. show the gap: the simulator's gravity is doubled; the "real" system is nominal
#   2. build the real dataset (medium-replay, from the shipped behaviour snapshots)
#   3. run the demo matrix: H2O, DARC, SAC (sim only), SAC oracle, IQL x 2 seeds
#   4. write the report: statistics with CIs, figures, tables -> results/demo/report
# Its measured time: README "Quick start". Re-running resumes: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
gb=.venv/bin/gapbench
export MPLBACKEND=Agg

echo "== 1/4 the gap =="
$gb envs describe halfcheetah --gap gravity=2.0 | head -n 8

echo "== 2/4 the real dataset =="
if ! $gb datasets info gapbench/halfcheetah/medium-replay-v0 >/dev/null 2>&1; then
  # 100k transitions, the log the demo and h2o-mini were measured on (the default is D4RL's 1M)
  $gb datasets build --task halfcheetah --quality medium-replay --size 100000
fi
$gb datasets info gapbench/halfcheetah/medium-replay-v0

echo "== 3/4 the matrix =="
$gb matrix run benchmark/configs/demo.yaml --workers 2

echo "== 4/4 the report =="
$gb report results/demo --out results/demo/report --baseline h2o
echo "Open results/demo/report/index.md"
