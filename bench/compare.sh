#!/usr/bin/env bash
# The three workloads (see `backprop bench`) against NumPy (the book's code) and PyTorch (CPU,
# 2 threads), run alternately for several rounds in one sitting; prints the table of medians
# and ratios for the README. W1F and W3F are W1 and W3 on Fashion-MNIST (half its pixels are
# ink where MNIST has a fifth), when Debian's dataset-fashion-mnist is installed. Not run by
# CI (it installs PyTorch).
#
#     bench/compare.sh [ROUNDS]       (default 3)
#
# Installs numpy and torch with pip into bench/.venv the first time (or set PYTHON to an
# interpreter that has both). Times: `wall` is the run with the evaluations it makes (W1: the
# book's per-epoch train and test accuracy; W2, W3: one epoch then train and test accuracy),
# `updates` the training steps alone.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
if [ -z "${PYTHON:-}" ]; then
    if [ ! -x bench/.venv/bin/python ]; then
        python3 -m venv bench/.venv
        bench/.venv/bin/pip install --quiet --disable-pip-version-check numpy torch
    fi
    PYTHON=bench/.venv/bin/python
fi
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# the binary as built now: a build in this checkout during the sitting must not swap it
cp target/release/backprop "$out/backprop"
field() { sed -E "s/.*\"($1)\": ?([0-9.eE+-]+).*/\2/" <<<"$2"; }
fashion=/usr/share/datasets/fashion-mnist
workloads="W1 W2 W3"
[ -d "$fashion" ] && workloads="$workloads W1F W3F"
declare -A times
for r in $(seq "$rounds"); do
    for w in $workloads; do
        base=${w%F}
        data=data/mnist
        [ "$base" != "$w" ] && data=$fashion
        ours=$("$out/backprop" bench --workload "$base" --data "$data" --json | tail -n 1)
        torch=$("$PYTHON" bench/peers/pytorch_workloads.py "$base" "$data" | tail -n 1)
        if [ "$base" = W1 ]; then
            numpy=$("$PYTHON" bench/train_neuralnet.py "$data" --json | tail -n 1)
            numpy_updates=nan
        else
            numpy=$("$PYTHON" bench/peers/numpy_workloads.py "$base" "$data" | tail -n 1)
            numpy_updates=$(field updates_s "$numpy")
        fi
        times[$w,ours]+="$(field wall_s "$ours") "
        times[$w,ours_u]+="$(field updates_s "$ours") "
        times[$w,torch]+="$(field wall_s "$torch") "
        times[$w,torch_u]+="$(field updates_s "$torch") "
        times[$w,numpy]+="$(field "wall_s|elapsed_s" "$numpy") "
        times[$w,numpy_u]+="$numpy_updates "
        echo "round $r $w: backprop $(field wall_s "$ours") s ($(field updates_s "$ours") s), pytorch $(field wall_s "$torch") s ($(field updates_s "$torch") s), numpy $(field "wall_s|elapsed_s" "$numpy") s ($numpy_updates s)"
    done
done
# the median of the numbers in "$1" (words that are not numbers, as nan, are left out)
median() { tr ' ' '\n' <<<"$1" | awk '/^[0-9.eE+-]+$/' | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else printf "%.2f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "nan" || b == "nan") print "-"; else printf "%.1fx", a / b}'; }
echo
echo "$(lscpu | sed -nE 's/^Model name: +//p'), $(nproc) cores, $(date -u +%Y-%m-%d); medians of $rounds rounds"
echo
echo "| workload | backprop wall (updates) | PyTorch wall (updates) | NumPy wall (updates) | vs PyTorch | vs NumPy |"
echo "| --- | --- | --- | --- | --- | --- |"
for w in $workloads; do
    o=$(median "${times[$w,ours]}"); ou=$(median "${times[$w,ours_u]}")
    t=$(median "${times[$w,torch]}"); tu=$(median "${times[$w,torch_u]}")
    n=$(median "${times[$w,numpy]}"); nu=$(median "${times[$w,numpy_u]}")
    echo "| $w | $o s ($ou s) | $t s ($tu s) | $n s ($nu s) | $(ratio "$t" "$o") | $(ratio "$n" "$o") |"
done
