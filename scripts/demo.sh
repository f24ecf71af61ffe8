#!/usr/bin/env bash
# The main job: gapbench end to end on halfcheetah, in about 13 minutes on 2 CPU cores.
#   1. the gap: what the simulator changes (gravity x2), and what that costs a policy
#      trained on the real system (the shipped expert, run on both)
#   2. the real log: 100k transitions of medium-replay quality (the shipped behaviour
#      training's early snapshots, from near-random to medium) into results/demo/data
#   3. the live matrix: BC, TD3+BC and IQL learning from that log, 3 seeds each
#   4. its report: statistics with CIs, learning curves, tables -> results/demo/report
#   5. the shipped reference records (H2O and the other methods with the simulator, run
#      by benchmark/configs/reference.yaml and committed): their report, or their state
# Its measured time: README "Quick start". Re-running resumes: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
gb=.venv/bin/gapbench
export MPLBACKEND=Agg

echo "== 1/5 the gap =="
$gb envs describe halfcheetah --gap gravity=2.0 | head -n 6
$gb envs transfer halfcheetah --gap gravity=2.0 --gap friction=0.3 --episodes 5

echo "== 2/5 the real log =="
# the log benchmark/configs/demo.yaml learns from (-vN: the shipped policies' version)
log=results/demo/data/gapbench/halfcheetah/medium-replay-v1
if ! $gb datasets info "$log" >/dev/null 2>&1; then
  $gb datasets build --task halfcheetah --quality medium-replay --size 100000 --data-dir results/demo/data
fi
$gb datasets info "$log"

echo "== 3/5 the live matrix =="
$gb matrix run benchmark/configs/demo.yaml --workers 2

echo "== 4/5 its report =="
$gb report results/demo --out results/demo/report --order bc,td3bc,iql

echo "== 5/5 the shipped reference records (not run here) =="
if compgen -G "results/reference/*/summary.json" >/dev/null; then
  made_by="gapbench matrix run benchmark/configs/reference.yaml"
  $gb report results/reference --out results/demo/reference-report --baseline h2o \
    --title "Shipped reference records (committed; produced by \`$made_by\`, not by the demo)"
  echo "Shipped records, produced by: $made_by"
  echo "Open results/demo/report/index.md and results/demo/reference-report/index.md"
else
  echo "No reference run has finished yet; in progress:"
  $gb matrix status benchmark/configs/reference.yaml
  echo "Open results/demo/report/index.md"
fi
