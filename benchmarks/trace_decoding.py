"""Does a different decoding, or a different writer, make a small T1's traces help retrieval?

On the 100 SciFact *train* claims the curriculum holds out (never the dev claims), each variant
writes one trace per claim (at most 64 tokens); the trained model then embeds claim + trace +
<emb_token> (mode "given", the same embedding as generate-then-embed) against the full corpus.
Reported per variant: nDCG@10 alone and fused with BM25 (weighted, T1 weight 0.4), how many
traces ended before the budget, and the first traces. Variants:

- `greedy` (the model's default decoding) and `sampled` (temperature 0.5 / 0.8, top-p 0.95);
- `repetition-1.1` / `-1.2` / `-1.3` and `no-repeat-3gram`: Hugging Face's repetition controls,
  against the degenerate loops ("cancer cancer cancer ...") greedy decoding falls into;
- `backbone`: traces written by the plain SmolLM2-135M-Instruct (no adapter), greedy: is the
  trained model a worse writer than the model it started from?

    T1_BENCH_OUT=benchmarks/results python3 benchmarks/trace_decoding.py [--model t1-smollm2-135m]
"""

from __future__ import annotations

import argparse
import sys
import time

from common import SCIFACT, report
from shipped_model import CLAIM_INSTRUCTION, holdout_data

VARIANTS = {
    "greedy": {},
    "sampled-0.5": {"do_sample": True, "temperature": 0.5, "top_p": 0.95},
    "sampled-0.8": {"do_sample": True, "temperature": 0.8, "top_p": 0.95},
    "repetition-1.1": {"repetition_penalty": 1.1},
    "repetition-1.2": {"repetition_penalty": 1.2},
    "repetition-1.3": {"repetition_penalty": 1.3},
    "no-repeat-3gram": {"no_repeat_ngram_size": 3},
    "backbone": None,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.retrievers import BM25Retriever, T1Retriever
    from t1.index.fusion import fuse
    from t1.model import load_model
    from t1.settings import QuerySettings

    held = holdout_data(args.dataset, 100)
    model = load_model(args.model, "cpu")
    qids = list(held.queries)
    prompts = [model.prompts.query_prompt(held.queries[q], CLAIM_INSTRUCTION, model.config.max_query_length)
               for q in qids]
    dense = T1Retriever(model, held.corpus, QuerySettings(reasoning="none", instruction=CLAIM_INSTRUCTION),
                        batch_size=args.batch_size, show_progress=False)
    bm25 = BM25Retriever(held.corpus).retrieve(held.queries, 100)

    per_query, rows = {}, {}

    def record(name: str, run) -> dict:
        """Score one run alone and fused with BM25; keep its per-query nDCG@10 for the CIs."""
        fused = {q: dict(fuse([run[q], bm25[q]], "weighted", [0.4, 0.6], 100)) for q in qids}
        ev = {"alone": evaluate(held.qrels, run), "fused": evaluate(held.qrels, fused)}
        per_query[name] = {k: {q: m["ndcg@10"] for q, m in e.per_query.items()} for k, e in ev.items()}
        rows[name] = {"ndcg@10": round(100 * ev["alone"].mean["ndcg@10"], 1),
                      "fused_ndcg@10": round(100 * ev["fused"].mean["ndcg@10"], 1)}
        return rows[name]

    record("none (no trace)", dense.retrieve(held.queries, 100))
    for name in args.variants.split(","):
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        traces, lengths = (backbone_traces(model, prompts, args) if VARIANTS[name] is None
                           else own_traces(model, prompts, args, VARIANTS[name]))
        seconds = time.perf_counter() - start
        row = record(name, dense.retrieve(held.queries, 100, reasoning=dict(zip(qids, traces))))
        row.update(ended=round(sum(n < args.max_new_tokens for n in lengths) / len(lengths), 2),
                   median_tokens=sorted(lengths)[len(lengths) // 2], seconds=round(seconds, 1), first_traces=traces[:3])
        print(f"{name}: {row['ndcg@10']} alone, {row['fused_ndcg@10']} fused, ended {row['ended']}", file=sys.stderr)
    base = per_query["greedy"] if "greedy" in per_query else None
    for name in rows:
        if base is not None and name != "greedy":
            rows[name]["vs_greedy_95ci"] = {k: [round(100 * x, 1) for x in paired_bootstrap(per_query[name][k], base[k])]
                                            for k in ("alone", "fused")}
    report("trace_decoding", {"model": args.model, "fingerprint": model.fingerprint(), "claims": len(qids),
                              "documents": len(held.corpus), "max_new_tokens": args.max_new_tokens,
                              "fusion_weight": 0.4, "variants": rows})
    return 0


def own_traces(model, prompts, args, decoding: dict) -> tuple[list[str], list[int]]:
    """The model's own traces, decoded as `decoding` says (extra keywords go to `generate`)."""
    from t1.settings import GREEDY, Decoding

    traces, lengths = [], []
    for i in range(0, len(prompts), args.batch_size):
        extra = dict(decoding)
        sampled = Decoding(True, extra.pop("temperature"), extra.pop("top_p")) if extra.pop("do_sample", False) else GREEDY
        rollout = model.engine.rollout(prompts[i:i + args.batch_size], args.max_new_tokens, 1, sampled, **extra)
        traces += [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in rollout.reasoning_ids]
        lengths += [len(ids) for ids in rollout.reasoning_ids]
    return traces, lengths


def backbone_traces(model, prompts, args) -> tuple[list[str], list[int]]:
    """Greedy traces of the plain backbone, stopped by its end-of-turn token."""
    import torch
    from transformers import AutoModelForCausalLM

    from t1.backbones import resolve_backbone
    from t1.batching import pad

    tok = model.tokenizer
    writer = AutoModelForCausalLM.from_pretrained(resolve_backbone(model.config.backbone), dtype=torch.float32).eval()
    traces, lengths = [], []
    for i in range(0, len(prompts), args.batch_size):
        ids, mask = pad(prompts[i:i + args.batch_size], tok.pad_token_id, side="left")
        with torch.no_grad():
            out = writer.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                                  do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for row in out[:, ids.shape[1]:].tolist():
            row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
            traces.append(tok.decode(row, skip_special_tokens=True).strip())
            lengths.append(len(row))
    return traces, lengths


if __name__ == "__main__":
    raise SystemExit(main())
