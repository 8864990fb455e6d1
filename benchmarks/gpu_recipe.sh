#!/usr/bin/env bash
# The shipped model's recipe on one GPU, end to end, with what must last copied to $OUT:
# the pairs, the curriculum (stage 1 -> traces -> stage 2, the fusion weight chosen on the
# held-out claims), the exported adapter, and benchmarks/shipped_model.py's comparison.
#
#   OUT=/tmp/out bash benchmarks/gpu_recipe.sh                  # on a GPU machine (bf16)
#   OUT=/tmp/out SMOKE=1 bash benchmarks/gpu_recipe.sh          # a few steps on CPU, to test the script
#
# Extra curriculum flags go through RECIPE_FLAGS (e.g. "--stage1.num_train_epochs 2").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder that comes back}
RUN=${RUN:-/tmp/t1-recipe}
mkdir -p "$OUT" "$RUN"
export T1_CACHE=${T1_CACHE:-$RUN/cache} T1_BENCH_OUT=$OUT

device=(--device cuda --stage1.bf16 true --stage2.bf16 true --traces.batch_size 64 --eval.batch_size 64)
pairs=(--term 100 --title 80 --sentence 80)
if [ -n "${SMOKE:-}" ]; then
    device=(--stage1.max_steps 2 --stage2.max_steps 2 --traces.max_records 8 --eval.max_queries 5
            --eval.max_documents 200 --holdout 10)
    pairs=(--term 4 --title 4 --sentence 4 --max-documents 300)
fi
start=$(date +%s)
[ -s "$RUN/pairs-domains.jsonl" ] || t1 data pairs --source wordnet --source foldoc --source python-docs \
    --source manpages "${pairs[@]}" --out "$RUN/pairs-domains.jsonl"
# shellcheck disable=SC2086
t1 train curriculum --config configs/t1-smollm2-135m/curriculum.yaml --output_dir "$RUN/run" \
    --pairs.file "$RUN/pairs-domains.jsonl" --export.folder "$RUN/t1-smollm2-135m" "${device[@]}" ${RECIPE_FLAGS:-} \
    2>&1 | tee "$OUT/curriculum.log"
echo "{\"curriculum_seconds\": $(( $(date +%s) - start ))}" > "$OUT/timing.json"
cp -r "$RUN/t1-smollm2-135m" "$OUT/"
cp "$RUN/run/fusion.json" "$RUN/run/curriculum-state.json" "$OUT/" 2>/dev/null || true
[ -n "${SMOKE:-}" ] || python3 benchmarks/shipped_model.py --model "$RUN/t1-smollm2-135m" --out "$RUN/shipped"
