#!/usr/bin/env bash
# Measures one `anec convert`: wall and CPU time (GNU time), peak resident memory split into
# anonymous memory (what the process allocated) and file-backed pages (the mmapped checkpoint,
# which the kernel can drop at will), and the bytes of every file written.
#
#   tools/bench_convert.sh ANEC_BINARY OUTPUT_DIR -- convert flags...
#   e.g. tools/bench_convert.sh target/release/anec /tmp/out -- --model /tmp/llama-1b --lut 6
#
# The checkpoint for the README figures comes from `cargo run --release --example make_checkpoint`.
set -euo pipefail
anec=$1 out=$2
shift 2
[ "${1:-}" = "--" ] && shift
[ -x /usr/bin/time ] || { echo "needs GNU time (Debian package 'time')" >&2; exit 2; }

log=$(mktemp)
samples=$(mktemp)
trap 'rm -f "$log" "$samples"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
/usr/bin/time -v "$anec" convert --output "$out" --force --quiet "$@" >/dev/null 2>"$log" &
timer=$!
# Sample the converter's memory every 100 ms (the child of GNU time).
while kill -0 "$timer" 2>/dev/null; do
  pid=$(pgrep -P "$timer" | head -n1 || true)
  [ -n "$pid" ] && awk '/^RssAnon|^RssFile/ {printf "%s %s ", $1, $2} END {print ""}' "/proc/$pid/status" 2>/dev/null >>"$samples" || true
  sleep 0.1
done
wait "$timer" || { cat "$log" >&2; exit 1; }
grep -E 'Elapsed|User time|System time|Percent of CPU|Maximum resident' "$log" | sed 's/^\s*/  /'
awk '{for (i = 1; i < NF; i += 2) if ($(i+1) > max[$i]) max[$i] = $(i+1)}
     END {printf "  peak anonymous memory (RssAnon): %.0f MiB\n  peak mapped file pages (RssFile): %.0f MiB\n", max["RssAnon:"]/1024, max["RssFile:"]/1024}' "$samples"
echo "  output:"
find "$out" -maxdepth 1 -mindepth 1 | sort | while read -r f; do
  printf '    %-45s %12s bytes\n' "$(basename "$f")" "$(du -sb "$f" | cut -f1)"
done
printf '    %-45s %12s bytes\n' "total" "$(du -sb "$out" | cut -f1)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
