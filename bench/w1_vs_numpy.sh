#!/usr/bin/env bash
# W1 speed: `backprop train` (release) against the book's NumPy code (bench/train_neuralnet.py),
# the same run (784-50-10, SGD 0.1, batch 100, 10000 iterations, per-epoch accuracy), run
# alternately for several rounds in one sitting. Prints each time and the medians' ratio.
# Times are of the training loop with its evaluations, not of loading the data, for both.
#
#     bench/w1_vs_numpy.sh [ROUNDS]        (default 3; installs numpy into bench/.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --quiet
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install --quiet numpy
fi
py=bench/.venv/bin/python
elapsed() { sed -E 's/.*"elapsed_s": ?([0-9.eE+-]+).*/\1/' <<<"$1"; }
ours=(); theirs=()
for r in $(seq "$rounds"); do
    a=$(elapsed "$(./target/release/backprop train --json --out "$(mktemp -d)" | tail -n 1)")
    b=$(elapsed "$("$py" bench/train_neuralnet.py --json | tail -n 1)")
    echo "round $r: backprop $a s, numpy $b s"
    ours+=("$a"); theirs+=("$b")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
mo=$(median "${ours[@]}"); mt=$(median "${theirs[@]}")
echo "median: backprop $mo s, numpy $mt s, ratio $(awk -v a="$mt" -v b="$mo" 'BEGIN {printf "%.1f", a / b}')x"
"$py" -c 'import numpy, threadpoolctl' 2>/dev/null && "$py" -c 'import threadpoolctl, json; print("numpy BLAS:", json.dumps([(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()]))' || true
