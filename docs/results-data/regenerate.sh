#!/usr/bin/env bash
# Regenerate the result files of docs/results-data/ from the bundled data, then docs/results.md
# and the report. Run from the repository root: bash docs/results-data/regenerate.sh
# (about two minutes on 2 CPU cores). Inputs: traces/data (bundled MoE results, serve runs,
# sample graphs) and benchmarks/memory (memstudy/1 of bench_memory.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.venv/bin
data=docs/results-data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# sim vs measured: replay each bundled measured run in the model (exit 1 past tolerance is a result);
# cpu-q250 with the profile recorded beside it, which has the shared-host terms (system model §8)
for run in cpu-r100 cpu-r400 cpu-q250; do
  profile=()
  if [ "$run" = cpu-q250 ]; then profile=(--profile traces/data/profiles/cpu-host.parquet); fi
  "$bin/sim" check "traces/data/serve/$run.parquet" "${profile[@]}" \
    --tolerance throughput=5,p50=5,p99=10 --json > "$tmp/simcheck-$run.jsonl" || [ $? -eq 1 ]
  mv "$tmp/simcheck-$run.jsonl" "$data/simcheck-$run.jsonl"
  printf '{"run": "%s", "tolerance_pct": {"throughput": 5, "p50": 5, "p99": 10}}\n' "$run" \
    > "$data/simcheck-$run.jsonl.meta.json"
done

# the B sweep in the simulator at the measured rates, three seeds (only the summaries are kept)
for rate in 100 400; do
  for seed in 0 1 2; do
    "$bin/sim" run --B 1..64 --rate "$rate" --requests 2000 --max-wait-ms 50 --seed "$seed" \
      --out "$tmp/sim-r$rate-s$seed.parquet" --json > /dev/null
    cp "$tmp/sim-r$rate-s$seed.summary.parquet" "$data/"
  done
done

# every ordering method on the bundled sample graphs, with proven lower bounds
"$bin/sched" compare traces/data/graphs/*.json --time-limit 30 --json > "$tmp/compare.jsonl"
mv "$tmp/compare.jsonl" "$data/compare-sample-graphs.jsonl"

"$bin/report" writeup traces/data benchmarks/memory "$data" --report ../runs/report.html \
  --out docs/results.md --force
"$bin/report" build traces/data benchmarks/memory "$data" --out runs/report.html --force
