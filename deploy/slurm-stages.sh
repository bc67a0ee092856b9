#!/bin/bash
# A staged 1M-domain scan as three Slurm job arrays with dependencies: 8 discover tasks
# (domain shards), then 8 probe tasks (address shards: each MX address is probed by one
# task only, so --per-ip and one session per (MX host, address) hold across the whole
# cluster), then 8 verdict tasks (domain shards) writing results/results-K-of-8.jsonl.
# `afterok` starts a stage once every task of the one before succeeded; a failed task
# leaves the later arrays pending (DependencyNeverSatisfied): resubmit it alone with
# `sbatch --array=K ...` and release them, or cancel and start over.
# Run it from the directory that holds lists/ (not under sbatch):  bash deploy/slurm-stages.sh
# See deploy/README.md before running it.
set -euo pipefail
mkdir -p logs stages results

ARRAY=0-7
OPTIONS="--ehlo-name scanner.example.org --contact postmaster@example.org \
--exclude lists/opt-out.txt --concurrency 200"
COMMON=(--array="$ARRAY" --cpus-per-task=2 --mem=4G --time=24:00:00 --parsable)

submit() {  # submit NAME DEPENDENCY COMMAND: the job id
    local name=$1 dependency=$2 command=$3
    local id
    id=$(sbatch "${COMMON[@]}" ${dependency:+--dependency=afterok:$dependency} \
        --job-name="mta-sts-$name" --output="logs/mta-sts-$name-%A_%a.out" --wrap "$command")
    echo "${id%%;*}"
}

discover=$(submit discover "" \
    "scanner stage discover --shard auto --input lists/top-1m.csv --input-format csv --out stages $OPTIONS")
probe=$(submit probe "$discover" "scanner stage probe --shard auto --in stages $OPTIONS")
verdict=$(submit verdict "$probe" "scanner stage verdict --shard auto --in stages --out results $OPTIONS")
echo "submitted: discover $discover, probe $probe (after it), verdict $verdict (after both)"
