#!/usr/bin/env bash
# W1 accuracy over seeds: the book's ch05 run (`backprop train` with its defaults) for each
# seed, then the mean and the minimum of the final test accuracy.
#
#     bench/w1_accuracy.sh [SEEDS...]        (default: 0 1 2 3 4)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
if [ $# -gt 0 ]; then seeds=("$@"); else seeds=(0 1 2 3 4); fi
printf '%-6s %-14s %-14s %-10s %s\n' seed test_accuracy train_accuracy final_loss elapsed_s
accs=()
for s in "${seeds[@]}"; do
    json=$(./target/release/backprop train --seed "$s" --json --out "$(mktemp -d)" | tail -n 1)
    field() { sed -E "s/.*\"$1\":([^,}]*).*/\1/" <<<"$json"; }
    printf '%-6s %-14.4f %-14.4f %-10.4f %.2f\n' "$s" "$(field test_accuracy)" "$(field train_accuracy)" \
        "$(field final_loss)" "$(field elapsed_s)"
    accs+=("$(field test_accuracy)")
done
printf '%s\n' "${accs[@]}" | awk '{s += $1; if (NR == 1 || $1 < m) m = $1} END {printf "mean test accuracy %.4f, min %.4f over %d seeds\n", s / NR, m, NR}'
