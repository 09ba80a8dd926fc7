#!/usr/bin/env bash
# End-to-end benchmark of the proxy: harrier-load → a local → the proxy → 3 globals, over loopback, release builds.
# The proxy runs alone on core 0; everything else shares core 1.
#
#   benches/proxy.sh [SERIES] [SECONDS]     default: 100000 timer series, 20 s
#   PERF=/tmp/proxy.data benches/proxy.sh   also records a cpu-clock profile of the proxy
#
# The local forwards one t-digest per timer series per 2 s interval, so the proxy routes SERIES/2 metrics per
# second. Reported: the proxy's CPU time (utime+stime from /proc/<pid>/stat) per metric routed (its
# harrier.import.metrics self-metric), i.e. the metrics per second it can route on one core, and whether the
# globals reported every series.
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${1:-100000}
SECONDS_RUN=${2:-20}
cargo build --release --quiet --bin harrier --bin harrier-load
BIN=target/release/harrier
LOAD=target/release/harrier-load
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for i in 1 2 3; do
  cat >"$WORK/g$i.yaml" <<YAML
statsd_listen_addresses: ["udp://127.0.0.1:$((18140 + i))"]
grpc_address: 127.0.0.1:$((18130 + i))
interval: 2s
num_workers: 1
metric_sinks: [{kind: console}]
YAML
  taskset -c 1 "$BIN" -f "$WORK/g$i.yaml" >"$WORK/g$i.out" 2>"$WORK/g$i.err" & PIDS+=($!)
done
cat >"$WORK/proxy.yaml" <<YAML
proxy: true
grpc_address: 127.0.0.1:18130
forward_addresses: ["127.0.0.1:18131", "127.0.0.1:18132", "127.0.0.1:18133"]
interval: 2s
num_workers: 1
metric_sinks: [{kind: console}]
YAML
taskset -c 0 "$BIN" -f "$WORK/proxy.yaml" >"$WORK/proxy.out" 2>"$WORK/proxy.err" & PROXY=$!; PIDS+=($PROXY)
cat >"$WORK/local.yaml" <<YAML
statsd_listen_addresses: ["udp://127.0.0.1:18125"]
forward_address: 127.0.0.1:18130
interval: 2s
num_workers: 1
read_buffer_size_bytes: 33554432
metric_sinks: [{kind: console}]
YAML
taskset -c 1 "$BIN" -f "$WORK/local.yaml" >/dev/null 2>"$WORK/local.err" & PIDS+=($!)
sleep 1
# Warm up one interval, then measure.
taskset -c 1 "$LOAD" --target 127.0.0.1:18125 --rate $((SERIES * 2)) --lines-per-datagram 50 --series "$SERIES" \
  --mix ms=1 --duration $((SECONDS_RUN + 4)) 2>"$WORK/load.err" &
LOADPID=$!
sleep 4
p0=$(ticks $PROXY); m0=$(awk '$3 == "harrier.import.metrics" {s += $4} END {print s + 0}' "$WORK/proxy.out")
if [ -n "${PERF:-}" ]; then
  perf record -e cpu-clock -g -p "$PROXY" -o "$PERF" -- sleep "$SECONDS_RUN" 2>/dev/null
else
  sleep "$SECONDS_RUN"
fi
p1=$(ticks $PROXY); m1=$(awk '$3 == "harrier.import.metrics" {s += $4} END {print s + 0}' "$WORK/proxy.out")
wait $LOADPID || true
sleep 5
python3 - "$HZ" "$((p1 - p0))" "$m0" "$m1" "$SERIES" "$WORK" <<'PY'
import sys, glob
hz, ticks, m0, m1, series, work = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
routed = m1 - m0
ns = ticks / hz * 1e9 / max(routed, 1)
print(f"proxy: routed {routed:.0f} metrics in the window, {ticks / hz:.2f} s of CPU: {ns:.0f} ns per metric, "
      f"{1e9 / ns / 1e6:.2f}M metrics/s on one core")
seen = [set() for _ in range(3)]
for i in range(3):
    for line in open(f"{work}/g{i + 1}.out"):
        parts = line.split(" ")
        if len(parts) > 3 and parts[2].endswith(".50percentile"):
            seen[i].add(parts[2] + line.rsplit(" tags=", 1)[-1])
counts = [len(s) for s in seen]
print(f"globals: percentile series per global {counts} (max/mean {max(counts) / (sum(counts) / 3):.3f}); "
      f"distinct over all {len(set().union(*seen))} of {series}")
PY
