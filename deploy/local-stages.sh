#!/bin/sh
# A staged scan on one machine: deploy/local-stages.sh SHARDS INPUT OUTDIR [scan options...]
#
# Runs `scanner stage discover`, then `probe`, then `verdict`, each as SHARDS processes
# at once, over the shared directory OUTDIR/stages, and writes every line to
# OUTDIR/results.jsonl. The scan options (--resolver, --timeout, --per-ip,
# --concurrency, --exclude, --contact ...) are given to every stage. Each shard's log is
# OUTDIR/logs/STAGE-K.log. A stage with a failed shard stops the run (exit status 1, or
# the shard's own status); SCANNER names the command (default: scanner).
# See deploy/README.md.
set -eu

if [ "$#" -lt 3 ]; then
    echo "usage: $0 SHARDS INPUT OUTDIR [scan options...]" >&2
    exit 2
fi
SHARDS=$1
INPUT=$2
OUTDIR=$3
shift 3
case "$SHARDS" in
    '' | *[!0-9]* | 0) echo "$0: SHARDS must be a number of at least 1, not '$SHARDS'" >&2; exit 2 ;;
esac
SCANNER=${SCANNER:-scanner}
STAGES=$OUTDIR/stages
LOGS=$OUTDIR/logs
if [ -d "$STAGES" ] && [ -n "$(ls -A "$STAGES")" ]; then
    echo "$0: $STAGES holds files of an earlier run: remove it, or choose another OUTDIR" >&2
    exit 2
fi
mkdir -p "$STAGES" "$LOGS"

# run_stage NAME ARGS...: SHARDS processes of `scanner stage NAME --shard K/SHARDS ARGS`.
run_stage() {
    name=$1
    shift
    began=$(date +%s)
    pids=""
    k=0
    while [ "$k" -lt "$SHARDS" ]; do
        # $SCANNER unquoted on purpose: "python -m scanner" is three words
        # shellcheck disable=SC2086
        $SCANNER stage "$name" --shard "$k/$SHARDS" "$@" >"$LOGS/$name-$k.log" 2>&1 &
        pids="$pids $!"
        k=$((k + 1))
    done
    failed=0
    k=0
    for pid in $pids; do
        if wait "$pid"; then
            :
        else
            status=$?
            echo "$0: $name shard $k/$SHARDS failed (exit status $status): $LOGS/$name-$k.log" >&2
            tail -n 5 "$LOGS/$name-$k.log" >&2
            failed=$status
        fi
        k=$((k + 1))
    done
    if [ "$failed" -ne 0 ]; then
        exit "$failed"
    fi
    echo "$name: $SHARDS shards in $(($(date +%s) - began)) s" >&2
}

start=$(date +%s)
run_stage discover --input "$INPUT" --out "$STAGES" "$@"
run_stage probe --in "$STAGES" --out "$STAGES" "$@"
run_stage verdict --in "$STAGES" --out "$STAGES" "$@"
k=0
: >"$OUTDIR/.results.jsonl"
while [ "$k" -lt "$SHARDS" ]; do
    cat "$STAGES/results-$k-of-$SHARDS.jsonl" >>"$OUTDIR/.results.jsonl"
    k=$((k + 1))
done
mv "$OUTDIR/.results.jsonl" "$OUTDIR/results.jsonl"
lines=$(wc -l <"$OUTDIR/results.jsonl")
echo "$lines lines written to $OUTDIR/results.jsonl by $SHARDS shards per stage in $(($(date +%s) - start)) s" >&2
