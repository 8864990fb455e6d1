#!/usr/bin/env bash
# BRIGHT on a multi-GPU machine, resumable: re-run the same command after any interruption.
#
#   scripts/bright_multigpu.sh BRIGHT_DIR OUT [MODEL] [SETTINGS]
#
# BRIGHT_DIR is a local copy of xlangai/BRIGHT (examples/, documents/ or long_documents/, as
# `t1 bright --dataset` reads it); MODEL defaults to ForwardAILabs/MRE-T1 and SETTINGS to
# configs/settings/mre-t1.json. LONG=1 runs the 8 long-document tasks; GPUS=N overrides the GPU count;
# TASKS="biology pony" runs those tasks only; DEVICE=cpu (with GPUS=1) tries the script on a CPU.
#
# 1. documents: every task's corpus indexed by all GPUs at once (torchrun ... t1 index) into
#    OUT/indexes/<task>; a complete index is skipped (and an interrupted one resumes by shard).
#    aops and theoremqa_questions share one corpus: the second links to the first's index.
# 2. queries: one `t1 bright` per GPU, tasks dealt round-robin, each reasoning over its tasks'
#    queries against the indexes of step 1; a task whose metrics.json exists is skipped.
# 3. the table: `t1 bright` over all tasks (all done: it only rewrites summary.json and prints
#    BRIGHT's table) and `t1 report` into OUT/report; skipped when OUT/report/report.md exists.
set -euo pipefail
DATA=${1:?usage: scripts/bright_multigpu.sh BRIGHT_DIR OUT [MODEL] [SETTINGS]}
OUT=${2:?usage: scripts/bright_multigpu.sh BRIGHT_DIR OUT [MODEL] [SETTINGS]}
MODEL=${3:-ForwardAILabs/MRE-T1}
SETTINGS=${4:-$(dirname "$0")/../configs/settings/mre-t1.json}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
DEVICE=${DEVICE:-cuda}
ONLY=${TASKS:-}
if [ -n "${LONG:-}" ]; then
    TASKS=(biology earth_science economics psychology robotics stackoverflow sustainable_living pony)
    DOCS=long_documents LONG_FLAG=(--long) RUN=$OUT/bright-long
else
    TASKS=(biology earth_science economics psychology robotics stackoverflow sustainable_living leetcode pony aops
           theoremqa_questions theoremqa_theorems)
    DOCS=documents LONG_FLAG=() RUN=$OUT/bright
fi
[ -n "$ONLY" ] && read -r -a TASKS <<< "$ONLY"
INDEXES=$OUT/indexes-$DOCS
mkdir -p "$INDEXES" "$RUN"

corpus() {  # the documents file of a task: <task>.jsonl, <task>.parquet or the hub's parquet shard
    ls "$DATA/$DOCS/$1.jsonl" "$DATA/$DOCS/$1.parquet" "$DATA/$DOCS/$1"-*.parquet 2>/dev/null | head -1
}
complete() { [ -f "$1/manifest.json" ] && grep -q '"complete": true' "$1/manifest.json"; }

echo "== 1/3 documents: $GPUS GPUs per task"
for task in "${TASKS[@]}"; do
    index=$INDEXES/$task
    if complete "$index"; then echo "$task: indexed already"; continue; fi
    if [ "$task" = theoremqa_questions ] && complete "$INDEXES/aops" && cmp -s "$(corpus aops)" "$(corpus "$task")"; then
        ln -sfn aops "$index"; echo "$task: the aops corpus, its index linked"; continue
    fi
    torchrun --standalone --nproc_per_node="$GPUS" -m t1 index --model "$MODEL" --settings "$SETTINGS" \
        --corpus "$(corpus "$task")" --out "$index" --no-bm25 --device "$DEVICE"
done

echo "== 2/3 queries: one t1 bright per GPU"
pids=()
for ((gpu = 0; gpu < GPUS; gpu++)); do
    mine=()
    for ((i = gpu; i < ${#TASKS[@]}; i += GPUS)); do mine+=("${TASKS[i]}"); done
    [ ${#mine[@]} -eq 0 ] && continue
    # each worker its own cache: no two processes write one SQLite reasoning cache
    CUDA_VISIBLE_DEVICES=$gpu T1_CACHE=$OUT/cache/gpu$gpu t1 bright --retriever "t1:$MODEL" --settings "$SETTINGS" \
        --dataset "$DATA" "${LONG_FLAG[@]}" --tasks "${mine[@]}" --index-root "$INDEXES" --out "$RUN" \
        --device "$DEVICE" --no-progress > "$RUN.gpu$gpu.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

echo "== 3/3 the table"
if [ -f "$RUN/report/report.md" ]; then
    cat "$RUN/report/report.md"
else
    t1 bright --retriever "t1:$MODEL" --settings "$SETTINGS" --dataset "$DATA" "${LONG_FLAG[@]}" --tasks "${TASKS[@]}" \
        --index-root "$INDEXES" --out "$RUN" --device "$DEVICE" --no-progress
    t1 report "$RUN" --out "$RUN/report"
fi
