#!/usr/bin/env bash
# The CLI user's whole wait for the default battle (interpreter, import, load, run, exit), with the
# page cache emptied first (a first run after a reboot) and then again with it full, this tree and
# another checkout taking turns. Needs root (it writes /proc/sys/vm/drop_caches).
#
#   bash bench/cold_start.sh ../old-checkout [rounds]   # writes bench/results/cold-start.txt
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
base=$(cd "$1" && pwd)
rounds=${2:-3}
out=bench/results/cold-start.txt
py="$here/.venv/bin/python"
seed=500
: > "$out"
wait_for() {  # seconds the battle of seed $2 takes in tree $1 (a new seed each time: nothing saved is reused)
  local s e
  s=$(date +%s.%N)
  (cd "$1" && "$py" -m tokconv run -l 20 -m adversarial-single --seed "$2" --quiet --no-save >/dev/null)
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
for round in $(seq "$rounds"); do
  for tree in "$here" "$base"; do
    seed=$((seed + 1))
    sync
    echo 3 > /proc/sys/vm/drop_caches
    echo "round $round $tree cold-cache $(wait_for "$tree" $seed)" | tee -a "$out"
    seed=$((seed + 1))
    echo "round $round $tree warm-cache $(wait_for "$tree" $seed)" | tee -a "$out"
  done
done
