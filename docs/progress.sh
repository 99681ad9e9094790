#!/bin/bash
# docs/progress-80.txt and docs/progress-120.txt: `emlc clean` mid-run, captured from tmux at 80 and 120 columns.
# The run pauses at a known step (EMLC_TEST_PAUSE_AT, see DEVELOPERS.md), the pane is captured, Ctrl-C stops it.
# Also: COLUMNS=80 emlc clean --help > docs/clean-help-80.txt (and 120).
set -euo pipefail
docs=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -c "from pathlib import Path; from emlc_cli.data.demo import extract_demo; extract_demo(Path('$work/data'))"
for W in 80 120; do
  tmux new-session -d -s "emlc-progress-$W" -x "$W" -y 30 \
    "cd $work && EMLC_TEST_PAUSE_AT=4:20 EMLC_TEST_PAUSE_FILE=$work/paused-$W OMP_NUM_THREADS=1 emlc clean data/train \
     --clean data/clean.csv --recipe quick train.epochs=8 meta.warmup_epochs=2 --out runs/r$W --device cpu; sleep 60"
  for _ in $(seq 1 600); do [ -f "$work/paused-$W" ] && break; sleep 1; done
  sleep 2  # one refresh of the live display
  tmux capture-pane -p -t "emlc-progress-$W" | sed -e 's/[[:space:]]*$//' | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' > "$docs/progress-$W.txt"
  tmux send-keys -t "emlc-progress-$W" C-c
  sleep 3
  tmux kill-session -t "emlc-progress-$W"
  COLUMNS=$W emlc clean --help > "$docs/clean-help-$W.txt"
done
