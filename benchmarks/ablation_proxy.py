"""Which parts of the stage-1 recipe matter: short stage-1 runs on a cheap proxy, each one
change from the shipped recipe, scored with paired bootstrap CIs against the base run (or,
for the `recipe+...` variants, against the recipe's learning rate, variant lr-6e-4, and for
the `recipe3+...` variants against the shipped recipe, variant recipe+negatives-3).

    python3 benchmarks/ablation_proxy.py prepare [--out /work/runs/ablation]
    python3 benchmarks/ablation_proxy.py run VARIANT [VARIANT ...] [--out ...]
    python3 benchmarks/ablation_proxy.py table [--out ...]    # -> benchmarks/results/ablation_proxy-cpu.json

The proxy (built by `prepare` from the shipped recipe's run folder, see configs/t1-smollm2-135m):
- training: 160 SciFact train claims + 40 pairs from each of WordNet, FOLDOC, the Python docs
  and the man pages, drawn with a fixed seed from the shipped stage-1 records (teacher scores
  included); stage 1 of the shipped recipe (configs/t1-smollm2-135m/stage1.yaml) on them;
- SciFact: the 100 dev claims and the curriculum's 100 held-out train claims (never trained on),
  against a sub-corpus of every judged abstract plus BM25's top 5 for each claim; mode `none`,
  documents cut at 128 tokens;
- other domains: 50 fresh pairs per source (`t1 data pairs --seed 1`, none of whose passages is
  in any training record), each query against its source's positives and BM25 negatives.
Each variant trains into OUT/VARIANT and writes OUT/VARIANT/result.json (skipped when present).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from common import SCIFACT

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "t1-smollm2-135m" / "stage1.yaml"
SHIPPED_RUN = Path("/work/runs/t1-smollm2-135m")
SOURCES = ("wordnet", "foldoc", "python-docs", "manpages")
CLAIMS, PAIRS_PER_SOURCE, OOD_PER_SOURCE, DISTRACTORS = 160, 40, 50, 5
EVAL_LENGTH = 128

# Each variant is one change from the base: the stage-1 recipe the table was measured against
# (LoRA learning rate 2e-4 and one BM25 negative per query, before lr-6e-4 and then three
# negatives won and went into the recipe), on the proxy data.
BASE = {"learning_rate": 2e-4, "negatives_per_query": 1}
VARIANTS = {
    "base": {},
    "no-distillation": {"distill_weight": 0},
    "no-other-domains": {"data": "claims"},
    "negatives-3": {"negatives_per_query": 3},
    "lora-r16": {"lora_r": 16, "lora_alpha": 32},
    "full-weights": {"use_peft": "false", "learning_rate": 3e-5, "weight_decay": 0.01},
    "documents-256": {"max_document_length": 256},
    "epochs-2": {"num_train_epochs": 2},
    "lr-6e-4": {"learning_rate": 6e-4},
    "lr-1e-3": {"learning_rate": 1e-3},
    "full-weights-1e-4": {"use_peft": "false", "learning_rate": 1e-4, "weight_decay": 0.01},
    # One change on top of the current recipe (learning rate 6e-4), compared against lr-6e-4.
    "recipe+negatives-3": {"learning_rate": 6e-4, "negatives_per_query": 3},
    "recipe+documents-256": {"learning_rate": 6e-4, "max_document_length": 256},
    # One change on top of the recipe with three negatives (the shipped one), against recipe+negatives-3.
    "recipe3+documents-256": {"learning_rate": 6e-4, "negatives_per_query": 3, "max_document_length": 256},
    "recipe3+epochs-2": {"learning_rate": 6e-4, "negatives_per_query": 3, "num_train_epochs": 2},
}
# A variant's name prefix says which earlier recipe it is one change from.
REFERENCES = {"recipe3+": "recipe+negatives-3", "recipe+": "lr-6e-4"}


def reference(variant: str) -> str:
    """What a variant is compared against: the recipe its prefix names, else `base`."""
    return next((ref for prefix, ref in REFERENCES.items() if variant.startswith(prefix)), "base")


def _read(path: Path) -> list[dict]:
    from t1.data import read_jsonl

    return [row for _, row in read_jsonl(path)]


def prepare(out: Path, shipped: Path) -> None:
    from t1.atomic import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    records = _read(shipped / "train-stage1.jsonl")
    claims = [r for r in records if "domain" not in r]
    pairs = {s: [r for r in records if r.get("domain") == s] for s in SOURCES}
    chosen = rng.sample(claims, CLAIMS)
    write_jsonl(out / "train-claims.jsonl", chosen)
    write_jsonl(out / "train-all.jsonl", chosen + [r for s in SOURCES for r in rng.sample(pairs[s], PAIRS_PER_SOURCE)])

    seen = {t for r in records for t in r["pos"] + r["neg"]}
    fresh = out / "ood-draw.jsonl"
    if not fresh.exists():
        cmd = [sys.executable, "-m", "t1", "data", "pairs", "--out", str(fresh), "--seed", "1",
               "--term", "100", "--title", "100", "--sentence", "100", "--negatives", "3"]
        for s in SOURCES:
            cmd += ["--source", s]
        subprocess.run(cmd, check=True)
    drawn, ood = _read(fresh), {}
    for s in SOURCES:
        rows = [r for r in drawn if r.get("domain") == s and not set(r["pos"]) & seen]
        ood[s] = random.Random(1).sample(rows, min(OOD_PER_SOURCE, len(rows)))
    (out / "ood.json").write_text(json.dumps(ood))
    (out / "scifact.json").write_text(json.dumps(_scifact_proxy()))
    print(f"prepared {out}: {len(chosen)} claims, {sum(map(len, ood.values()))} other-domain queries")


def _scifact_proxy() -> dict:
    """Dev + held-out train claims over judged abstracts plus BM25 distractors."""
    sys.path.insert(0, str(Path(__file__).parent))
    from shipped_model import holdout_data

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.retrievers import BM25Retriever

    dev, held = load_eval_data(str(SCIFACT), "dev"), holdout_data(str(SCIFACT), 100)
    queries = {**{f"dev-{q}": t for q, t in dev.queries.items()}, **{f"train-{q}": t for q, t in held.queries.items()}}
    qrels = {**{f"dev-{q}": r for q, r in dev.qrels.items()}, **{f"train-{q}": r for q, r in held.qrels.items()}}
    queries = {q: t for q, t in queries.items() if q in qrels}
    top = BM25Retriever(dev.corpus, show_progress=False).retrieve(queries, k=DISTRACTORS)
    keep = {d for r in qrels.values() for d in r} | {d for hits in top.values() for d in hits}
    corpus = {d.id: {"title": d.title, "text": d.text} for d in dev.corpus if d.id in keep}
    return {"queries": queries, "qrels": qrels, "corpus": corpus}


def _ood_sets(out: Path, name: str = "ood.json"):
    """Per source: (queries, qrels, corpus), relevance = the record's own positive."""
    for source, rows in json.loads((out / name).read_text()).items():
        texts = sorted({t for r in rows for t in r["pos"] + r["neg"]})
        ids = {t: f"{source}-{i}" for i, t in enumerate(texts)}
        queries = {f"q{i}": r["query"] for i, r in enumerate(rows)}
        qrels = {f"q{i}": {ids[t]: 1 for t in r["pos"]} for i, r in enumerate(rows)}
        yield source, rows[0].get("instruction"), queries, qrels, {ids[t]: t for t in texts}


def _eval_sets(out: Path):
    from t1.data import Document

    sci = json.loads((out / "scifact.json").read_text())
    corpus = [Document(i, d["text"], d["title"]) for i, d in sci["corpus"].items()]
    claim = "Given a scientific claim, retrieve documents that support or refute the claim"
    yield "scifact", claim, sci["queries"], sci["qrels"], corpus
    for source, instruction, queries, qrels, texts in _ood_sets(out):
        yield source, instruction, queries, qrels, [Document(i, t) for i, t in texts.items()]


def score(spec: str, out: Path, model=None) -> dict:
    """Per-query nDCG@10 on every proxy set for one retriever."""
    from t1.evaluation.metrics import evaluate
    from t1.evaluation.retrievers import make_retriever
    from t1.settings import QuerySettings

    result = {}
    for name, instruction, queries, qrels, corpus in _eval_sets(out):
        retriever = make_retriever(spec, corpus, model=model, query=QuerySettings(reasoning="none", instruction=instruction),
                                   batch_size=16, reasoning_cache=False, show_progress=False)
        if hasattr(retriever, "max_length"):
            retriever.max_length = EVAL_LENGTH
        ev = evaluate(qrels, retriever.retrieve(queries, k=10))
        result[name] = {q: row["ndcg@10"] for q, row in ev.per_query.items()}
    return result


def run(variant: str, out: Path) -> None:
    folder = out / variant
    if (folder / "result.json").exists():
        print(f"{variant}: done already")
        return
    change = {**BASE, **VARIANTS[variant]}
    data = out / f"train-{change.pop('data', 'all')}.jsonl"
    cmd = [sys.executable, "-m", "t1", "train", "contrastive", "--config", str(RECIPE),
           "--train_file", str(data), "--output_dir", str(folder), "--save_steps", "1000", "--logging_steps", "5"]
    for key, value in change.items():
        cmd += [f"--{key}", str(value)]
    start = time.perf_counter()
    if not (folder / "t1_config.json").exists():
        subprocess.run(cmd, check=True, cwd=ROOT)
    train_s = time.perf_counter() - start

    from t1.model import T1Model

    model = T1Model.from_pretrained(str(folder), device="cpu")
    start = time.perf_counter()
    scores = score(f"t1:{folder}", out, model=model)
    result = {"variant": variant, "change": VARIANTS[variant], "train_s": round(train_s),
              "eval_s": round(time.perf_counter() - start), "ndcg@10": scores}
    (folder / "result.json").write_text(json.dumps(result))
    print(variant, {k: round(100 * sum(v.values()) / len(v), 1) for k, v in scores.items()})


def baselines(out: Path) -> None:
    for name, spec in (("bm25", "bm25"), ("all-MiniLM-L6-v2", "st:all-minilm-l6-v2")):
        path = out / f"baseline-{name}.json"
        if not path.exists():
            path.write_text(json.dumps({"variant": name, "ndcg@10": score(spec, out)}))


def table(out: Path) -> dict:
    from t1.evaluation.metrics import paired_bootstrap

    results = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))}
    results.update({p.stem.removeprefix("baseline-"): json.loads(p.read_text()) for p in out.glob("baseline-*.json")})
    sets = list(results["base"]["ndcg@10"])

    def other_domains(scores: dict) -> dict:
        return {f"{s}:{q}": v for s in sets[1:] for q, v in scores[s].items()}

    rows = []
    for name, res in results.items():
        row = {"variant": name, "change": res.get("change"), "train_s": res.get("train_s")}
        for s in sets:
            row[s] = round(100 * sum(res["ndcg@10"][s].values()) / len(res["ndcg@10"][s]), 1)
        other = other_domains(res["ndcg@10"])
        row["other domains"] = round(100 * sum(other.values()) / len(other), 1)
        ref = reference(name)
        if name != "base" and "change" in res and ref in results:
            row["reference"] = ref
            ref_scores = results[ref]["ndcg@10"]
            for label, mine, theirs in (("scifact", res["ndcg@10"]["scifact"], ref_scores["scifact"]),
                                        ("other domains", other, other_domains(ref_scores))):
                diff, low, high = paired_bootstrap(mine, theirs)
                row[f"{label} vs reference"] = [round(100 * diff, 1), round(100 * low, 1), round(100 * high, 1)]
        rows.append(row)
    print(f"| variant | vs | train s | SciFact | {' | '.join(sets[1:])} | other domains | Δ SciFact [95% CI] | Δ other [95% CI] |")
    print("| --- | --- |" + " ---: |" * (len(sets) + 4))
    for r in rows:
        ci = lambda key: "–" if key not in r else f"{r[key][0]:+.1f} [{r[key][1]:+.1f}, {r[key][2]:+.1f}]"
        cells = [r["variant"], r.get("reference", "–"), str(r["train_s"] or "–"), *(f"{r[s]:.1f}" for s in sets),
                 f"{r['other domains']:.1f}", ci("scifact vs reference"), ci("other domains vs reference")]
        print("| " + " | ".join(cells) + " |")
    return {"rows": rows, "queries": {s: len(results["base"]["ndcg@10"][s]) for s in sets}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "run", "baselines", "table"])
    parser.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)} (run: default all)")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/ablation"))
    parser.add_argument("--shipped-run", type=Path, default=SHIPPED_RUN,
                        help="the shipped recipe's run folder (its train-stage1.jsonl)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.shipped_run)
    elif args.command == "run":
        for variant in args.variants or VARIANTS:
            run(variant, args.out)
    elif args.command == "baselines":
        baselines(args.out)
    else:
        from common import report

        report("ablation_proxy-cpu", table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
