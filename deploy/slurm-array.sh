#!/bin/bash
# A 1M-domain scan as a Slurm job array: 8 tasks, task K scans shard K/8.
# `--shard auto` reads SLURM_ARRAY_TASK_ID, _MIN, _MAX, _STEP and _COUNT; the array must be
# a plain range (0-7, 1-8, 0-14:2), not a list such as 1,4,9. Submit from the directory
# that holds lists/ and receives results/:  sbatch deploy/slurm-array.sh
# A requeued task (--requeue, preemption) continues its file: --resume.
# A staged scan, which probes each MX address from one task only, is three arrays with
# dependencies: deploy/slurm-stages.sh. See deploy/README.md before running it.
#SBATCH --job-name=mta-sts-scan
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=24:00:00
#SBATCH --output=logs/mta-sts-scan-%A_%a.out

set -euo pipefail
mkdir -p logs results

scanner scan --input lists/top-1m.csv --input-format csv --shard auto \
    --vantage slurm-campus --ehlo-name scanner.example.org --contact postmaster@example.org \
    --exclude lists/opt-out.txt --concurrency 200 --no-progress \
    --out "results/scan-${SLURM_ARRAY_JOB_ID}-shard${SLURM_ARRAY_TASK_ID}.jsonl" --resume
