#!/usr/bin/env bash
# SimpleConvNet speed: one epoch of `backprop train --model simple-cnn` (Adam 0.001, batch
# 100, shuffled) against the same network in PyTorch (bench/peers/simple_cnn_pytorch.py, CPU,
# 2 threads), alternately for several rounds in one sitting. Both times are of the epoch's
# updates only (no data loading, no evaluation). Prints each round and the medians' ratio.
#
#     bench/cnn_vs_pytorch.sh [ROUNDS] [PYTHON]   (default 3, python3; PYTHON must have torch
#                                                  and numpy: pip install torch numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
py=${2:-python3}
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ours=(); theirs=()
for r in $(seq "$rounds"); do
    a=$(./target/release/backprop train --model simple-cnn --optimizer adam --lr 0.001 --epochs 1 \
        --quiet --json --out "$out" | tail -n 1 | sed -E 's/.*"mean_epoch_train_s":([0-9.eE+-]+).*/\1/')
    b=$("$py" bench/peers/simple_cnn_pytorch.py data/mnist 1 | sed -E 's/^epoch 1: ([0-9.]+) s.*/\1/')
    echo "round $r: backprop $a s, pytorch $b s"
    ours+=("$a"); theirs+=("$b")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
mo=$(median "${ours[@]}"); mt=$(median "${theirs[@]}")
echo "median: backprop $mo s, pytorch $mt s, ratio $(awk -v a="$mt" -v b="$mo" 'BEGIN {printf "%.2f", a / b}')x"
