#!/usr/bin/env bash
# Wall time of a study run by one process and as Slurm arrays of 1, 2 and 4 shards (encode +
# cells + merge, from sbatch to the merge job's end), Slurm's own start-up cost per job, and
# the merge time of a 10,000-cell run. Needs a release build and a running cluster
# (.ci/slurm-up.sh). Usage: bench/slurm_scaling.sh WORKDIR [--set k=v]…
set -euo pipefail
cd "$(dirname "$0")/.."
xrlab=${XRLAB_BIN:-$PWD/.build/release/xrlab}
work=${1:?usage: bench/slurm_scaling.sh WORKDIR [--set k=v]…}; shift
sets=("$@")
mkdir -p "$work"
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

[ -f "$work/demo/manifest.csv" ] || "$xrlab" demo --dir "$work/demo" --seeds 1 --quiet >/dev/null
recipe=recipes/demo-tuning.yaml
paths=(--set "model.path=$work/demo/model" --set "data.manifest=$work/demo/manifest.csv")
cpus=$(nproc)

# Features cached once, so every variant below times the same work (cells + merge).
XRLAB_CACHE=$work/cache "$xrlab" run "$recipe" "${paths[@]}" "${sets[@]}" --stage encode --quiet >/dev/null
export XRLAB_CACHE=$work/cache

t=$(now)
"$xrlab" run "$recipe" "${paths[@]}" "${sets[@]}" --set "output=$work/local" --threads "$cpus" --quiet >/dev/null
echo "one process, $cpus threads: $(since "$t") s"

for n in 1 2 4; do
    out=$work/slurm-$n
    c=$(( cpus / n > 0 ? cpus / n : 1 ))
    t=$(now)
    "$xrlab" submit "$recipe" --slurm --shards "$n" --cpus "$c" "${paths[@]}" "${sets[@]}" --set "output=$out" >/dev/null
    merge=$(python3 -c "import json;print(json.load(open('$out/submit.json'))['submissions'][-1]['merge_job'])")
    while [ -n "$(squeue -h -j "$merge" 2>/dev/null)" ]; do sleep 0.2; done
    echo "slurm, $n shards × $c cpus: $(since "$t") s"
done

# Slurm's cost per job: a job that does nothing, from sbatch to its end.
t=$(now)
j=$(sbatch --parsable --output=/dev/null --wrap true)
while [ -n "$(squeue -h -j "$j" 2>/dev/null)" ]; do sleep 0.1; done
echo "empty job, sbatch to end: $(since "$t") s"

# Merge of 10,000 cells (synthetic features: 2 tasks × 4 method settings × 5 shots × 250 seeds).
big=(--set seeds=250 --set bootstrap=0 --set "output=$work/merge-10k")
"$xrlab" run recipes/synthetic-features.yaml "${big[@]}" --quiet >/dev/null
t=$(now)
"$xrlab" merge "$work/merge-10k" --quiet >/dev/null
echo "merge of $(ls "$work/merge-10k/cells" | wc -l) cells: $(since "$t") s"
