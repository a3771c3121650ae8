#!/usr/bin/env bash
# Prints issue 13's table for Llama-3.2-1B and Llama-3.1-8B shapes (random bf16 weights): wall
# time, CPU time (user + system) and maximum resident set size, as GNU time reports them, of
# `anec convert` at the default LUT (6-bit) and at `--lut 4`, and optionally of `anec verify`;
# then the largest file written and the total output size.
#
#   tools/bench_scale.sh ANEC WORK_DIR [--verify] [1b] [8b]      (default: both shapes)
#   e.g. tools/bench_scale.sh target/release/anec /work/ckpt 1b
#
# Checkpoints are written once to WORK_DIR/llama-<shape> by the make_checkpoint example (8B: about
# 16 GB of disk; generate it outside the repository), outputs go to WORK_DIR/out-<shape>-<run>
# and are replaced on each run. 1B is converted with --chunks 2 (the issue's baseline), 8B with
# --chunks auto (every chunk under 1 GiB).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
anec=$(realpath "$1") work=$2
shift 2
verify=0 shapes=()
for a in "$@"; do
  case $a in
    --verify) verify=1 ;;
    1b | 8b) shapes+=("$a") ;;
    *) echo "unknown argument $a (use --verify, 1b, 8b)" >&2; exit 2 ;;
  esac
done
[ ${#shapes[@]} -gt 0 ] || shapes=(1b 8b)
[ -x /usr/bin/time ] || { echo "needs GNU time (Debian package 'time')" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run LABEL COMMAND...: one table row from GNU time's report.
run() {
  local label=$1
  shift
  /usr/bin/time -v "$@" >/dev/null 2>"$log" || { tail -n 30 "$log" >&2; exit 1; }
  awk -v label="$label" -F': ' '
    /Elapsed \(wall clock\)/ { wall = $2 }
    /User time/ { cpu += $2 }
    /System time/ { cpu += $2 }
    /Maximum resident/ { rss = $2 }
    END { printf "| %s | %s | %.1f s | %.2f GB |", label, wall, cpu, rss * 1024 / 1e9 }' "$log"
}

sizes() {
  local biggest
  biggest=$(find "$1" -name weight.bin -printf '%s %P\n' | sort -n | tail -n 1)
  printf ' %s (%s) | %.2f GB |\n' "$(numfmt --to=iec --suffix=B "${biggest%% *}")" \
    "${biggest#* }" "$(du -sb "$1" | awk '{print $1 / 1e9}')"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model, run | wall | CPU | max RSS | largest weight.bin | output |"
echo "| --- | --- | --- | --- | --- | --- |"
for shape in "${shapes[@]}"; do
  ckpt=$work/llama-$shape
  if [ ! -e "$ckpt/config.json" ]; then
    (cd "$repo" && cargo run --quiet --release --example make_checkpoint -- "$ckpt" --shape "$shape") 2>/dev/null
  fi
  chunks=2
  [ "$shape" = 8b ] && chunks=auto
  for lut in 6 4; do
    out=$work/out-$shape-lut$lut
    flags=(--chunks "$chunks")
    [ "$lut" = 4 ] && flags+=(--lut 4)
    run "${shape^^} LUT$lut, ${flags[*]}" "$anec" convert --model "$ckpt" --output "$out" --force \
      --quiet --no-compile "${flags[@]}"
    sizes "$out"
    if [ "$verify" = 1 ]; then
      run "${shape^^} verify (LUT$lut)" "$anec" verify "$out" --model "$ckpt"
      echo " | |"
    fi
  done
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
