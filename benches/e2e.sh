#!/usr/bin/env bash
# End-to-end benchmark: the release server and harrier-load on this host, over loopback UDP.
#
#   benches/e2e.sh [SCENARIO...]      scenarios: mixed50k mixed50k10s million-mixed counters10 max10 series300k
#                                     series300k-mixed (the default set), and the tuned-config ones mixed100
#                                     single singlemax million
#
# By default nothing is pinned: the server, the sender, the stand-in intake and the floor's receiver run where the
# scheduler puts them, as they do on a user's host (applications share the host with their metrics server).
# PIN=1 pins the server (and the floor's receiver) to core 0 and the load and intake to core 1; PIN=both runs
# every round twice, unpinned then pinned, so that the two alternate. Each result line says which it was.
#
# The production-shaped scenarios (all but the tuned ones) run the DEFAULT configuration plus a Datadog sink posting
# to a local stand-in intake (harrier-load --intake), with flushes inside the measured window; the intake only
# stores the bodies, which are decoded after the run. The tuned ones (mixed100, single, singlemax, million) run
# num_workers: 1, a 32 MiB receive buffer, the console sink and a long interval.
#
# Environment: ROUNDS=N runs each scenario N times (default 1): this VM's speed drifts between runs, so report the
# range. READERS=N sets the server's num_readers (default 0: the workers read the sockets themselves).
#
# For each scenario it reports, measured in the same run:
#   - the server's CPU time per line (utime+stime from /proc/<pid>/stat, before and after the load);
#   - the --discard receive floor's CPU time per line at the same offered load, pinned or not like the server;
#   - context switches (voluntary and involuntary) and CPU migrations of all the server's threads per 1,000 lines
#     (from /proc/<pid>/task/*/status and sched, over the load window);
#   - lines lost: what the load tool's manifest says it sent vs the lines the server flushed (its
#     harrier.listener.lines self-metric), the kernel's UDP receive-buffer drops (/proc/net/snmp), and whether
#     every counter's flushed total equals the manifest's;
#   - the server's peak RSS (VmHWM).
# Needs: python3 (and taskset for PIN=1). Sends only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin harrier --bin harrier-load
BIN=${HARRIER_BIN:-target/release/harrier}   # HARRIER_BIN=path compares another build (A/B runs)
LOAD=target/release/harrier-load
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PORT=18125
HZ=$(getconf CLK_TCK)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# sched PID: voluntary and involuntary context switches and CPU migrations, summed over the process's threads.
sched() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {printf "%d %d", v, n}'
  printf ' '
  cat /proc/"$1"/task/*/sched 2>/dev/null | awk '/^se.nr_migrations/ {m += $3} END {printf "%d\n", m}'
}
# on CORE CMD...: runs CMD (exec, so that $! of `on ... &` is CMD's pid), on CORE only when MODE is pinned.
on() {
  local core=$1; shift
  if [ "$MODE" = pinned ]; then exec taskset -c "$core" "$@"; else exec "$@"; fi
}
MODE=unpinned
udp_drops() { awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp; }   # RcvbufErrors

# run_scenario NAME INTERVAL DURATION LOADARGS...
run_scenario() {
  local name=$1 interval=$2 duration=$3; shift 3
  echo "== $name: harrier-load $* --duration $duration"

  # 1. The floor: a receiver that only receives, under the same load.
  on 0 "$LOAD" --discard --listen "127.0.0.1:$PORT" --duration $((duration + 2)) >"$WORK/floor.out" 2>"$WORK/floor.err" &
  local fpid=$!
  sleep 0.5
  local f0; f0=$(ticks $fpid)
  (on 1 "$LOAD" --target "127.0.0.1:$PORT" --duration "$duration" "$@" 2>"$WORK/floor-load.err")
  sleep 0.3
  local f1; f1=$(ticks $fpid)
  wait $fpid || true
  local floor_dgrams; floor_dgrams=$(cat "$WORK/floor.out")
  local floor_sent; floor_sent=$(grep -o 'sent [0-9]* lines in [0-9]* datagrams' "$WORK/floor-load.err" | awk '{print $2, $5}')

  # 2. The server, same load.
  cat >"$WORK/config.yaml" <<YAML
statsd_listen_addresses: ["udp://127.0.0.1:$PORT"]
interval: $interval
num_workers: 1
num_readers: ${READERS:-0}
read_buffer_size_bytes: 33554432
metric_sinks: [{kind: console}]
YAML
  local drops0; drops0=$(udp_drops)
  on 0 "$BIN" --config "$WORK/config.yaml" >"$WORK/server.out" 2>"$WORK/server.err" &
  local spid=$!
  sleep 0.5
  local s0; s0=$(ticks $spid)
  local c0; c0=$(sched $spid)
  (on 1 "$LOAD" --target "127.0.0.1:$PORT" --duration "$duration" --manifest "$WORK/manifest.json" "$@" 2>"$WORK/server-load.err")
  sleep 0.5
  local s1; s1=$(ticks $spid)
  local c1; c1=$(sched $spid)
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$spid/status")
  kill -TERM $spid
  wait $spid || true
  local drops1; drops1=$(udp_drops)

  python3 - "$WORK" "$HZ" "$((s1 - s0))" "$((f1 - f0))" "$floor_dgrams" "$floor_sent" "$rss" "$((drops1 - drops0))" "$c0" "$c1" "$MODE" <<'PY'
import json, sys, collections
work, hz, sticks, fticks, floor_dgrams, floor_sent, rss, drops, c0, c1, mode = sys.argv[1:]
hz, sticks, fticks, floor_dgrams, rss, drops = int(hz), int(sticks), int(fticks), int(floor_dgrams), int(rss), int(drops)
floor_lines_sent, floor_dgrams_sent = (int(x) for x in floor_sent.split())
m = json.load(open(f"{work}/manifest.json"))
lines_in = 0
counters = collections.defaultdict(float)
flush_ms = []
for line in open(f"{work}/server.out"):
    parts = line.rstrip("\n").split(" ")
    if len(parts) < 5:
        continue
    ts, kind, name, value = parts[0], parts[1], parts[2], float(parts[3])
    tags = line.rstrip("\n").split(" tags=", 1)[1] if " tags=" in line else ""
    if name == "harrier.listener.lines":
        lines_in += value
    elif name == "harrier.flush.duration_ms":
        flush_ms.append(value)
    elif kind == "counter" and name.startswith("load.c."):
        counters[f"{name}|#{tags}" if tags else name] += value
mismatched = sum(1 for k, v in m["counters"].items() if abs(counters.get(k, 0.0) - v) > 1e-6)
lost = m["lines"] - lines_in
server_ns = sticks / hz * 1e9 / max(lines_in, 1)
floor_ns = fticks / hz * 1e9 / max(floor_dgrams_sent * (floor_lines_sent / max(floor_dgrams_sent, 1)), 1)
floor_ratio = floor_dgrams / max(floor_dgrams_sent, 1)
print(f"   offered: {m['lines']} lines in {m['datagrams']} datagrams over {m['seconds']:.1f}s ({m['lines']/m['seconds']:.0f} lines/s)")
print(f"   server:  {lines_in:.0f} lines taken in, {lost:.0f} lost; kernel UDP rcvbuf drops {drops}; "
      f"counters matching the manifest: {len(m['counters']) - mismatched}/{len(m['counters'])}")
vol, invol, migr = (b - a for a, b in zip(map(int, c0.split()), map(int, c1.split())))
per_k = 1000 / max(lines_in, 1)
print(f"   [{mode}] context switches per 1,000 lines: {vol * per_k:.3f} voluntary, {invol * per_k:.3f} involuntary; "
      f"migrations per 1,000 lines: {migr * per_k:.3f} ({vol} + {invol} switches, {migr} migrations)")
print(f"   [{mode}] server CPU per line: {server_ns:.0f} ns; floor (--discard) CPU per line: {floor_ns:.0f} ns; ratio {server_ns / max(floor_ns, 1e-9):.2f}")
print(f"   floor took in {floor_dgrams}/{floor_dgrams_sent} datagrams ({100*floor_ratio:.1f}%); server took in "
      f"{100 * lines_in / max(m['lines'], 1):.1f}% of lines sent")
print(f"   peak RSS {rss/1024:.0f} MiB; flush build durations (ms): {', '.join(f'{x:.0f}' for x in flush_ms)}")
with open(f"{work}/rounds", "a") as r:
    r.write(f"{mode} {sticks} {lines_in} {fticks} {floor_lines_sent} {lost} {rss}\n")
PY
}

# run_prod NAME INTERVAL DURATION LOADARGS...: the default configuration with a Datadog sink.
run_prod() {
  local name=$1 interval=$2 duration=$3; shift 3
  echo "== $name (default config + datadog sink, interval $interval): harrier-load $* --duration $duration"
  on 0 "$LOAD" --discard --listen "127.0.0.1:$PORT" --duration $((duration + 2)) >"$WORK/floor.out" 2>"$WORK/floor.err" &
  local fpid=$!
  sleep 0.5
  local f0; f0=$(ticks $fpid)
  (on 1 "$LOAD" --target "127.0.0.1:$PORT" --duration "$duration" "$@" 2>"$WORK/floor-load.err")
  sleep 0.3
  local f1; f1=$(ticks $fpid)
  wait $fpid || true
  local floor_sent; floor_sent=$(grep -o 'sent [0-9]* lines in [0-9]* datagrams' "$WORK/floor-load.err" | awk '{print $2, $5}')

  local iport=18080
  rm -rf "$WORK/bodies"
  on 1 "$LOAD" --intake "$WORK/bodies" --listen "127.0.0.1:$iport" --duration $((duration + 60)) 2>"$WORK/intake.err" &
  local ipid=$!
  cat >"$WORK/config.yaml" <<YAML
statsd_listen_addresses: ["udp://127.0.0.1:$PORT"]
interval: $interval
metric_sinks: [{kind: datadog, config: {api_key: bench, api_hostname: "http://127.0.0.1:$iport"}}]
YAML
  local drops0; drops0=$(udp_drops)
  on 0 "$BIN" --config "$WORK/config.yaml" >"$WORK/server.out" 2>"$WORK/server.err" &
  local spid=$!
  sleep 0.5
  local s0; s0=$(ticks $spid)
  local c0; c0=$(sched $spid)
  (on 1 "$LOAD" --target "127.0.0.1:$PORT" --duration "$duration" --manifest "$WORK/manifest.json" "$@" 2>"$WORK/server-load.err")
  local s1; s1=$(ticks $spid)
  local c1; c1=$(sched $spid)
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$spid/status")
  kill -TERM $spid
  wait $spid || true
  local drops1; drops1=$(udp_drops)
  grep -v "listening on\|stopping, with" "$WORK/server.err" | tail -3 | sed 's/^/   server stderr: /' || true
  kill $ipid 2>/dev/null || true
  wait $ipid 2>/dev/null || true
  # v2 series bodies (protobuf, zstd) are decoded by harrier-load; v1 JSON ones by the script below.
  "$LOAD" --decode "$WORK/bodies" >"$WORK/v2-series.jsonl"
  python3 - "$WORK" "$HZ" "$((s1 - s0))" "$((f1 - f0))" "$floor_sent" "$rss" "$((drops1 - drops0))" "$c0" "$c1" "$MODE" <<'PY'
import json, sys, os, zlib, collections
work, hz, sticks, fticks, floor_sent, rss, drops, c0, c1, mode = sys.argv[1:]
hz, sticks, fticks, rss, drops = int(hz), int(sticks), int(fticks), int(rss), int(drops)
floor_lines_sent, floor_dgrams_sent = (int(x) for x in floor_sent.split())
m = json.load(open(f"{work}/manifest.json"))
lines_in = 0.0
counters = collections.defaultdict(float)
flush_ms, sink_ms = [], []
def all_series():
    for f in os.listdir(f"{work}/bodies"):
        if f.endswith("api_v1_series"):
            yield from json.loads(zlib.decompress(open(f"{work}/bodies/{f}", "rb").read()))["series"]
    for line in open(f"{work}/v2-series.jsonl"):
        yield json.loads(line)
for s in all_series():
    v = s["points"][0][1] * (s.get("interval") or 1 if s["type"] == "rate" else 1)
    name, tags = s["metric"], ",".join(t for t in s.get("tags", []))
    if name == "harrier.listener.lines":
        lines_in += v
    elif name == "harrier.flush.duration_ms":
        flush_ms.append(v)
    elif name == "harrier.sink.duration_ms":
        sink_ms.append(v)
    elif s["type"] == "rate" and name.startswith("load.") and not name.endswith(".count"):
        counters[f"{name}|#{tags}" if tags else name] += v
mismatched = sum(1 for k, v in m["counters"].items() if abs(counters.get(k, 0.0) - v) > 1e-6 * max(1, v))
lost = m["lines"] - lines_in
server_ns = sticks / hz * 1e9 / max(lines_in, 1)
floor_ns = fticks / hz * 1e9 / max(floor_lines_sent, 1)
print(f"   offered: {m['lines']} lines in {m['datagrams']} datagrams over {m['seconds']:.1f}s ({m['lines']/m['seconds']:.0f} lines/s)")
print(f"   server:  {lines_in:.0f} lines taken in, {lost:.0f} lost; kernel UDP rcvbuf drops {drops}; "
      f"counters matching the manifest: {len(m['counters']) - mismatched}/{len(m['counters'])}")
vol, invol, migr = (b - a for a, b in zip(map(int, c0.split()), map(int, c1.split())))
per_k = 1000 / max(lines_in, 1)
print(f"   [{mode}] context switches per 1,000 lines: {vol * per_k:.3f} voluntary, {invol * per_k:.3f} involuntary; "
      f"migrations per 1,000 lines: {migr * per_k:.3f} ({vol} + {invol} switches, {migr} migrations)")
print(f"   [{mode}] server CPU per line (flushes and Datadog encoding included): {server_ns:.0f} ns; floor {floor_ns:.0f} ns")
print(f"   peak RSS {rss/1024:.0f} MiB; flush build (ms): {', '.join(f'{x:.0f}' for x in sorted(flush_ms))}; "
      f"sink (ms): {', '.join(f'{x:.0f}' for x in sorted(sink_ms))}")
with open(f"{work}/rounds", "a") as r:
    r.write(f"{mode} {sticks} {lines_in} {fticks} {floor_lines_sent} {lost} {rss}\n")
PY
}

# summary NAME: the totals over the rounds just run (CPU summed over rounds, so drift between rounds averages out).
summary() {
  python3 - "$1" "$WORK/rounds" "$HZ" <<'PY'
import sys, collections
name, path, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
by_mode = collections.defaultdict(list)
for l in open(path):
    mode, *rest = l.split()
    by_mode[mode].append(list(map(float, rest)))
for mode, rows in by_mode.items():
    per = [r[0] / hz * 1e9 / max(r[1], 1) for r in rows]
    s = sum(r[0] for r in rows) / hz * 1e9 / max(sum(r[1] for r in rows), 1)
    f = sum(r[2] for r in rows) / hz * 1e9 / max(sum(r[3] for r in rows), 1)
    print(f"== {name} [{mode}]: {len(rows)} round(s): server {s:.0f} ns/line (rounds {min(per):.0f}-{max(per):.0f}), "
          f"floor {f:.0f} ns/line, ratio {s / max(f, 1e-9):.2f}, lines lost {sum(r[4] for r in rows):.0f}, "
          f"peak RSS {max(r[5] for r in rows) / 1024:.0f} MiB")
PY
  rm -f "$WORK/rounds"
}

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(mixed50k mixed50k10s million-mixed counters10 max10 series300k series300k-mixed)
case ${PIN:-0} in
  0) modes=(unpinned) ;;
  1) modes=(pinned) ;;
  both) modes=(unpinned pinned) ;;
  *) echo "PIN is 0, 1 or both" >&2; exit 2 ;;
esac
PROD_MIX=c=70,g=10,ms=10,h=5,s=5
for s in "${scenarios[@]}"; do
 for _ in $(seq "${ROUNDS:-1}"); do
  for MODE in "${modes[@]}"; do
  case $s in
    mixed100)   run_scenario mixed100 60s 8 --rate 1000000 --lines-per-datagram 100 --series 10000 ;;
    single)     run_scenario single 60s 8 --rate 150000 --lines-per-datagram 1 --series 1000 --mix c=1 ;;
    singlemax)  run_scenario singlemax 60s 8 --rate 0 --lines-per-datagram 1 --series 1000 --mix c=1 ;;
    million)    run_scenario million 5s 12 --rate 1000000 --lines-per-datagram 50 --series 1000000 --mix c=1 ;;
    counters10) run_prod counters10 2s 10 --rate 1000000 --lines-per-datagram 10 --series 1000 --mix c=1 ;;
    max10)      run_prod max10 2s 10 --rate 0 --lines-per-datagram 10 --series 1000 --mix c=1 ;;
    mixed50k)   run_prod mixed50k 2s 10 --rate 1000000 --lines-per-datagram 100 --names 10000 --mix $PROD_MIX ;;
    mixed50k10s) run_prod mixed50k10s 10s 22 --rate 1000000 --lines-per-datagram 100 --names 10000 --mix $PROD_MIX ;;
    million-mixed) run_prod million-mixed 10s 22 --rate 1000000 --lines-per-datagram 50 --series 1000000 --mix $PROD_MIX ;;
    series300k) run_prod series300k 2s 10 --rate 1000000 --lines-per-datagram 50 --series 300000 --mix c=1 ;;
    series300k-mixed) run_prod series300k-mixed 2s 10 --rate 1000000 --lines-per-datagram 50 --series 300000 --mix $PROD_MIX ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  done
 done
 summary "$s"
done
