#!/usr/bin/env bash
# Two builds of backprop, A and B, timed on the three workloads in alternating rounds in one
# sitting (A, B, A, B, ...): the median wall and update times of each and B's ratio to A.
#
#     bench/ab.sh A_BINARY B_BINARY [ROUNDS]     (default 5)
#
# Build A from another checkout (`git worktree add /tmp/a REV && cargo build --release`
# there). A ratio below 1 means B is faster.
set -euo pipefail
a=$1 b=$2 rounds=${3:-5}
cd "$(dirname "$0")/.."
field() { sed -E "s/.*\"($1)\":([0-9.eE+-]+).*/\2/" <<<"$2"; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
declare -A wall updates
for r in $(seq "$rounds"); do
    for w in W1 W2 W3; do
        for side in a b; do
            bin=${!side}
            line=$("$bin" bench --workload "$w" --json | grep "\"workload\":\"$w\"")
            wall[$side$w]+="$(field wall_s "$line") "
            updates[$side$w]+="$(field updates_s "$line") "
        done
    done
done
printf '%-4s %10s %10s %7s   %12s %12s %7s\n' workload "A wall s" "B wall s" "B/A" "A updates s" "B updates s" "B/A"
for w in W1 W2 W3; do
    aw=$(tr ' ' '\n' <<<"${wall[a$w]}" | grep . | median)
    bw=$(tr ' ' '\n' <<<"${wall[b$w]}" | grep . | median)
    au=$(tr ' ' '\n' <<<"${updates[a$w]}" | grep . | median)
    bu=$(tr ' ' '\n' <<<"${updates[b$w]}" | grep . | median)
    printf '%-8s %10.3f %10.3f %7.3f   %12.3f %12.3f %7.3f\n' "$w" "$aw" "$bw" "$(echo "$bw / $aw" | bc -l)" \
        "$au" "$bu" "$(echo "$bu / $au" | bc -l)"
done
echo "(medians of $rounds alternating rounds; rounds of B wall: W1 ${wall[bW1]}| W2 ${wall[bW2]}| W3 ${wall[bW3]})"
