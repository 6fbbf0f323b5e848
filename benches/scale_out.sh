#!/usr/bin/env bash
# Throughput of 1 and 2 scaled-out instances (`pipeline streaming --scale-out`, docs/scale-out.md)
# draining one backlog, on this machine, in one run. The output goes to the null sink, so the
# figure is the job's (both stages, the checked topics' produce and fetch), not the databases'.
#
#   bash scripts/services.sh up && eval "$(bash scripts/services.sh env)"
#   cargo build --release -p pipeline --features services
#   cargo build --release -p generator --features kafka
#   bash benches/scale_out.sh            # HOURS=6 of the thesis city by default (~285,000 records)
#
# Each count of instances gets its own topics (a fresh prefix) holding the same seeded backlog.
# The time runs from the instances' start to the lease holder's exit, less the idle exit that ends
# it (process start, joining the groups and taking the lease are inside it, ~1-2 s).
set -euo pipefail
cd "$(dirname "$0")/.."

HOURS=${HOURS:-6}
IDLE_MS=3000
KAFKA=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

for n in 1 2; do
    prefix="scalebench-$$-$n-"
    "$bin/generator" produce --seed 7 --duration "${HOURS}h" --start 2026-11-30T00:00:00Z \
        --max-speed --partitions 4 --topic-prefix "$prefix" --bootstrap-servers "$KAFKA" \
        >"$work/produce-$n.log" 2>&1
    pids=()
    started=$(date +%s.%N)
    for i in $(seq 1 "$n"); do
        "$bin/pipeline" streaming --scale-out --sink null --no-console \
            --kafka-bootstrap-servers "$KAFKA" --topic-prefix "$prefix" --group-id "$prefix" \
            --checkpoint-dir "$work/checkpoint-$n" --idle-exit-ms "$IDLE_MS" \
            --report-json "$work/report-$n-$i.json" >"$work/job-$n-$i.log" 2>&1 &
        pids+=("$!")
    done
    # The lease holder ends by itself at the end of the input; then the others are stopped.
    while :; do
        ended=""
        for p in "${pids[@]}"; do
            kill -0 "$p" 2>/dev/null || ended=$p
        done
        [ -n "$ended" ] && break
        sleep 0.05
    done
    took=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$started")
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait || true
    python3 - "$n" "$IDLE_MS" "$took" "$work"/report-"$n"-*.json <<'EOF'
import json, sys
n, idle, took = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
runs = [json.load(open(p)) for p in sys.argv[4:]]
holder = max(runs, key=lambda r: r["records"])
secs = took - idle / 1000
print(f"{n} instance(s): {holder['records']} records applied in {secs:.1f} s: "
      f"{holder['records'] / secs:,.0f} records/s")
EOF
done
