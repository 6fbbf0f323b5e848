#!/usr/bin/env bash
# benches/peers/spark/run.sh — our streaming job and Apache Spark Structured Streaming side by
# side, measured in one run on this machine (see README.md beside this script).
#
# Usage (from anywhere; the services of scripts/services.sh must be up):
#   bash benches/peers/spark/run.sh [bench.py options]
#       --backlog 2h --load-factor 10   backlog of city time and load factor (defaults)
#       --live-seconds 300              length of each job's live latency run
#       --skip-live                     no live latency run
#       --search-loads 500,1000,...     load factors of the sustainable-throughput search
#       --search-warmup-seconds 20 --search-window-seconds 60
#       --skip-search                   no sustainable-throughput search (~14 min less)
#       --only-search --search-jobs ours   the search alone, of one job or both
#       --out DIR                       results (default target/spark-peer/<UTC time>)
#
# It installs pyspark and the Kafka connector (setup.sh, cached), builds the release `pipeline`
# and `generator` (unless PIPELINE_BIN and GENERATOR_BIN name them), then runs bench.py, which prints the table and writes results.json and
# table.md to the results folder. Every topic it makes starts with `spark-bench-<time>-` and is
# deleted at the end (`--keep-topics` keeps them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)

eval "$(bash "$ROOT/scripts/services.sh" env)"
bash "$ROOT/scripts/services.sh" status >/dev/null ||
    { echo "run.sh: the services are not all running; start them with: bash scripts/services.sh up" >&2; exit 1; }
eval "$(bash "$HERE/setup.sh" env)"

# PIPELINE_BIN and GENERATOR_BIN, when both are set, are measured instead of building this tree
# (e.g. binaries built from a clean checkout of a commit while the tree has edits in flight).
if [[ -z ${PIPELINE_BIN:-} || -z ${GENERATOR_BIN:-} ]]; then
    echo "run.sh: building the release pipeline and generator..." >&2
    (cd "$ROOT" && cargo build --release -q -p pipeline --features services --bin pipeline &&
        cargo build --release -q -p generator --features kafka --bin generator)
    export PIPELINE_BIN=$ROOT/target/release/pipeline
    export GENERATOR_BIN=$ROOT/target/release/generator
fi

out=$ROOT/target/spark-peer/$(date -u +%Y%m%dT%H%M%SZ)
args=("$@")
for a in "$@"; do [[ $a == --out ]] && out=""; done
[[ -n $out ]] && args=(--out "$out" "${args[@]}")
exec python3 "$HERE/bench.py" "${args[@]}"
