"""Per-query adaptive fusion (`t1.index.fusion` method "adaptive") against the fixed-weight default,
BM25 alone and T1 alone, on runs computed once and saved.

    python3 benchmarks/ablation_proxy.py prepare          # the other-domain and SciFact proxy sets
    python3 benchmarks/adaptive_fusion.py prepare-test    # a second, fresh other-domain draw
    python3 benchmarks/adaptive_fusion.py runs  [--out /work/runs/fusion] [--proxy /work/runs/ablation]
    python3 benchmarks/adaptive_fusion.py fit   [--out ...]   # the rule's parameters, on training claims only
    T1_BENCH_OUT=benchmarks/results python3 benchmarks/adaptive_fusion.py table [--out ...]

`runs` retrieves the top 100 of every query once per system (BM25, all-MiniLM-L6-v2, the
shipped T1 in modes `none` and `generate`) and saves them as JSON under OUT/runs/<set>/; the other
two steps only read those files, so fitting and evaluating a fusion rule takes seconds.

The sets:
- `scifact-train`: the curriculum's 100 held-out SciFact *train* claims (never trained on; the
  claims the model's `fusion_weight` was chosen on). The only data the rule is fitted on.
- `scifact-dev`: the 100 SciFact dev claims (evaluation only).
- `wordnet`, `foldoc`, `python-docs`, `manpages`: the ablation proxy's 50 fresh pairs each from
  other domains (validation: never fitted on, but looked at once while the rule was built, see
  the README).
- `wordnet-2`, ...: a second fresh draw of 50 pairs per source (`prepare-test`, seed 2), none of
  whose passages is in a training record or in the first draw: drawn and run after the rule was
  frozen, so it tests it.
Both SciFact sets search the ablation proxy's sub-corpus (every judged abstract plus BM25's top 5
of each claim: 867 abstracts), not the full 5,183: encoding those on this project's 2 shared
cores costs about 40 minutes. Documents are cut at the model's own length (256 tokens).

`fit` chooses the rule's sharpness and statistic depth (`t1.index.fusion.ADAPTIVE_*`) on
`scifact-train` in three worlds: the real lists, BM25's list replaced by an uninformative one
(uniform random scores over its documents), and T1's replaced the same way; the objective is the
mean nDCG@10 over the three worlds, so a rule that follows the informative side when one side is
noise, and keeps the fixed weight's gain where both sides inform, wins. `table` then scores every
system on every set with paired bootstrap 95% intervals, and the failure case: one side
replaced by random or constant scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import report  # noqa: E402

CLAIM = "Given a scientific claim, retrieve documents that support or refute the claim"
SYSTEMS = {"BM25": ("bm25", None), "all-MiniLM-L6-v2": ("st:all-minilm-l6-v2", None),
           "T1 none": ("t1:{model}", "none"), "T1 generate": ("t1:{model}", "generate")}
OOD = ("wordnet", "foldoc", "python-docs", "manpages")
DEPTH = 100


def prepare_test(out: Path, proxy: Path, seed: int = 2) -> None:
    """A second, fresh draw of other-domain pairs (`t1 data pairs --seed 2`), none of whose
    passages is in a training record or in the proxy's first draw: OUT/ood-test.json, 50 per
    source, searched like the first. It tests the rule after the first draw was looked at."""
    import random
    import subprocess

    from ablation_proxy import OOD_PER_SOURCE, SHIPPED_RUN, SOURCES, _read

    seen = {t for r in _read(SHIPPED_RUN / "train-stage1.jsonl") for t in r["pos"] + r["neg"]}
    seen |= {t for rows in json.loads((proxy / "ood.json").read_text()).values() for r in rows for t in r["pos"] + r["neg"]}
    drawn = out / f"ood-draw-seed{seed}.jsonl"
    if not drawn.exists():
        cmd = [sys.executable, "-m", "t1", "data", "pairs", "--out", str(drawn), "--seed", str(seed),
               "--term", "100", "--title", "100", "--sentence", "100", "--negatives", "3"]
        for source in SOURCES:
            cmd += ["--source", source]
        subprocess.run(cmd, check=True)
    rows, test = _read(drawn), {}
    for source in SOURCES:
        fresh = [r for r in rows if r.get("domain") == source and not set(r["pos"]) & seen]
        test[source] = random.Random(seed).sample(fresh, min(OOD_PER_SOURCE, len(fresh)))
    (out / "ood-test.json").write_text(json.dumps(test))
    print({s: len(v) for s, v in test.items()}, file=sys.stderr)


def _sets(proxy: Path, test: Path | None = None):
    """(name, instruction, queries, qrels, corpus as Documents) of every set, as the proxy has them."""
    from ablation_proxy import _ood_sets

    from t1.data import Document

    sci = json.loads((proxy / "scifact.json").read_text())
    corpus = [Document(i, d["text"], d["title"]) for i, d in sci["corpus"].items()]
    for name, prefix in (("scifact-train", "train-"), ("scifact-dev", "dev-")):
        queries = {q: t for q, t in sci["queries"].items() if q.startswith(prefix)}
        yield name, CLAIM, queries, {q: sci["qrels"][q] for q in queries}, corpus
    for source, instruction, queries, qrels, texts in _ood_sets(proxy):
        yield source, instruction, queries, qrels, [Document(i, t) for i, t in texts.items()]
    if test is not None and (test / "ood-test.json").exists():
        for source, instruction, queries, qrels, texts in _ood_sets(test, "ood-test.json"):
            yield f"{source}-2", instruction, queries, qrels, [Document(i, t) for i, t in texts.items()]


def runs(out: Path, proxy: Path, model_name: str, systems: list[str]) -> None:
    from t1.evaluation.retrievers import make_retriever
    from t1.model import load_model
    from t1.settings import QuerySettings

    model = load_model(model_name, "cpu")
    sets = list(_sets(proxy, out))
    for name in systems:
        spec, mode = SYSTEMS[name]
        for set_name, instruction, queries, qrels, corpus in sets:
            folder = out / "runs" / set_name
            path = folder / f"{name}.json"
            if path.exists():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "qrels.json").write_text(json.dumps(qrels))
            retriever = make_retriever(spec.format(model=model_name), corpus, model=model if mode else None,
                                       query=QuerySettings(reasoning=mode or "none", instruction=instruction),
                                       batch_size=16, show_progress=False)
            start = time.perf_counter()
            result = retriever.retrieve(queries, k=DEPTH)
            seconds = round(time.perf_counter() - start, 1)
            path.write_text(json.dumps({"system": name, "set": set_name, "seconds": seconds,
                                        "fingerprint": model.fingerprint() if mode else None,
                                        "settings": getattr(retriever, "settings", {}), "run": result},
                                       default=str))
            print(f"{set_name} / {name}: {seconds} s", file=sys.stderr, flush=True)


def load(out: Path, set_name: str) -> tuple[dict, dict]:
    folder = out / "runs" / set_name
    saved = {p.stem: json.loads(p.read_text())["run"] for p in folder.glob("*.json") if p.stem != "qrels"}
    return saved, json.loads((folder / "qrels.json").read_text())


PRIOR = 0.4  # the shipped model's fusion_weight (chosen on scifact-train at sharpness 0), the rule's prior
SHARPNESS_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
DEPTH_GRID = (5, 10, 20, 50, 100)
NOISE_SEED = 0


def uninformative(run: dict, kind: str, seed: int = NOISE_SEED) -> dict:
    """A list that knows nothing of the order: its documents with uniform random scores
    ("random") or all with the same score ("constant")."""
    import random

    rng = random.Random(seed)
    return {q: {d: (rng.random() if kind == "random" else 1.0) for d in sorted(docs)} for q, docs in run.items()}


def fused_run(dense: dict, sparse: dict, method: str, prior: float = PRIOR, sharpness: float | None = None,
              depth: int | None = None, k: int = DEPTH) -> dict:
    """Per query, the fused top `k` of a dense and a BM25 run: the fixed weighted sum
    (`weighted`) or the adaptive rule with these parameters (default: t1.index.fusion's)."""
    from t1.index.fusion import _ranked, adaptive_weights, weighted_sum

    out = {}
    for q in dense.keys() | sparse.keys():
        lists = [dense.get(q, {}), sparse.get(q, {})]
        weights = [prior, 1 - prior]
        if method == "adaptive":
            weights = adaptive_weights(lists, weights, sharpness, depth)
        scores = weighted_sum(lists, weights)
        out[q] = {d: scores[d] for d in _ranked(scores)[:k]}
    return out


def mean_t1_weight(dense: dict, sparse: dict, sharpness: float | None = None, depth: int | None = None) -> float:
    from t1.index.fusion import adaptive_weights

    ws = [adaptive_weights([dense.get(q, {}), sparse.get(q, {})], [PRIOR, 1 - PRIOR], sharpness, depth)[0]
          for q in dense.keys() | sparse.keys()]
    return sum(ws) / len(ws)


def ndcg(qrels: dict, run: dict) -> dict[str, float]:
    from t1.evaluation.metrics import evaluate

    return {q: m["ndcg@10"] for q, m in evaluate(qrels, run, cutoffs=(10,)).per_query.items()}


def mean(scores: dict[str, float]) -> float:
    return 100 * sum(scores.values()) / len(scores)


def fit(out: Path, dense_name: str = "T1 generate") -> dict:
    """Sharpness and depth of the adaptive rule that score best on scifact-train, averaged over
    the three worlds (real lists; BM25 uninformative; T1 uninformative)."""
    saved, qrels = load(out, "scifact-train")
    dense, sparse = saved[dense_name], saved["BM25"]
    worlds = {"real": (dense, sparse), "BM25 random": (dense, uninformative(sparse, "random")),
              "T1 random": (uninformative(dense, "random"), sparse)}
    grid = {}
    for a in SHARPNESS_GRID:
        for m in DEPTH_GRID if a else DEPTH_GRID[:1]:
            row = {w: round(mean(ndcg(qrels, fused_run(d, s, "adaptive", sharpness=a, depth=m))), 2)
                   for w, (d, s) in worlds.items()}
            row["mean"] = round(sum(row.values()) / len(row), 2)
            grid[f"{a:g}/{m}"] = row
            print(f"sharpness {a:g} depth {m}: {row}", file=sys.stderr)
    best = max(grid, key=lambda key: (grid[key]["mean"], -float(key.split("/")[0]), -int(key.split("/")[1])))
    alone = {w: {"T1": round(mean(ndcg(qrels, d)), 2), "BM25": round(mean(ndcg(qrels, s)), 2)}
             for w, (d, s) in worlds.items()}
    result = {"fitted_on": "scifact-train (100 held-out SciFact train claims, proxy sub-corpus)", "dense": dense_name,
              "prior_t1_weight": PRIOR, "objective": "mean nDCG@10 over the worlds",
              "chosen": {"sharpness": float(best.split("/")[0]), "depth": int(best.split("/")[1])},
              "grid (sharpness/depth)": grid, "single lists": alone}
    (out / "fit.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("chosen", "single lists")}), file=sys.stderr)
    return result


def table(out: Path) -> dict:
    """Every system on every set, the fusions at the model's weight (fixed) and adaptive (the
    parameters in t1.index.fusion), with paired bootstrap 95% CIs; the other-domain sets also pooled."""
    from t1 import fusion
    from t1.evaluation.metrics import paired_bootstrap

    second = [f"{s}-2" for s in OOD if (out / "runs" / f"{s}-2" / "T1 generate.json").exists()]
    sets = ["scifact-train", "scifact-dev", *OOD, *second]
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    t1_weights: dict[str, dict[str, float]] = {}
    simulated: dict[str, dict[str, float]] = {}
    for set_name in sets:
        saved, qrels = load(out, set_name)
        scores = {name: ndcg(qrels, run) for name, run in saved.items()}
        for dense in [n for n in ("T1 generate", "T1 none", "all-MiniLM-L6-v2") if n in saved]:
            for method in ("weighted", "adaptive"):
                scores[f"{dense} + BM25 {method}"] = ndcg(qrels, fused_run(saved[dense], saved["BM25"], method))
            t1_weights.setdefault(dense, {})[set_name] = round(mean_t1_weight(saved[dense], saved["BM25"]), 3)
        # The failure case: one side replaced by an uninformative list (random or constant scores).
        sim = {}
        for kind in ("random", "constant"):
            for side in ("BM25", "T1"):
                dense, sparse = saved["T1 generate"], saved["BM25"]
                if side == "BM25":
                    sparse = uninformative(sparse, kind)
                else:
                    dense = uninformative(dense, kind)
                for method in ("weighted", "adaptive"):
                    sim[f"{side} {kind}: {method}"] = round(mean(ndcg(qrels, fused_run(dense, sparse, method))), 1)
                sim[f"{side} {kind}: the informative side alone"] = round(mean(scores["BM25" if side == "T1" else "T1 generate"]), 1)
        simulated[set_name] = sim
        per_query[set_name] = scores
    pools = {"other domains": OOD}
    if second:
        pools.update({"other domains, second draw": second, "other domains, both draws": [*OOD, *second]})
    for pool, members in pools.items():
        names = set.intersection(*(set(per_query[s]) for s in members))
        per_query[pool] = {name: {f"{s}:{q}": v for s in members for q, v in per_query[s][name].items()}
                           for name in sorted(names, key=list(per_query[members[0]]).index)}

    def ci(set_name: str, a: str, b: str | dict) -> list[float]:
        theirs = per_query[set_name][b] if isinstance(b, str) else b
        return [round(100 * x, 1) for x in paired_bootstrap(per_query[set_name][a], theirs)]

    rows, comparisons = [], {}
    for set_name, scores in per_query.items():
        rows.append({"set": set_name, "queries": len(scores["BM25"]),
                     **{name: round(mean(v), 1) for name, v in scores.items()}})
        cmp = {}
        for mode in ("T1 generate", "T1 none"):
            if mode not in scores:
                continue
            better = max((mode, "BM25"), key=lambda n: mean(scores[n]))
            for method in ("adaptive", "weighted"):
                name = f"{mode} + BM25 {method}"
                cmp[f"{name} - BM25"] = ci(set_name, name, "BM25")
                cmp[f"{name} - {mode}"] = ci(set_name, name, mode)
                cmp[f"{name} - better half ({better})"] = ci(set_name, name, better)
            cmp[f"{mode} + BM25 adaptive - weighted"] = ci(set_name, f"{mode} + BM25 adaptive", f"{mode} + BM25 weighted")
        cmp["all-MiniLM-L6-v2 + BM25 adaptive - weighted"] = ci(set_name, "all-MiniLM-L6-v2 + BM25 adaptive",
                                                                  "all-MiniLM-L6-v2 + BM25 weighted")
        comparisons[set_name] = cmp
    names = list(per_query["scifact-dev"])
    print("| set | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for row in rows:
        print(f"| {row['set']} | " + " | ".join(f"{row[n]:.1f}" if n in row else "–" for n in names) + " |")
    for set_name, cmp in comparisons.items():
        print(set_name, json.dumps(cmp))
    fit_file = out / "fit.json"
    return {"rule": {"prior_t1_weight": PRIOR, "sharpness": fusion.ADAPTIVE_SHARPNESS, "depth": fusion.ADAPTIVE_DEPTH},
            "fit": json.loads(fit_file.read_text()) if fit_file.exists() else None,
            "corpus": "SciFact: the ablation proxy's sub-corpus (867 abstracts); other domains: the proxy's sets",
            "metric": "nDCG@10 x100; CIs: paired bootstrap 95%, 10,000 resamples",
            "rows": rows, "ndcg10_difference_and_95ci": comparisons, "mean_adaptive_t1_weight": t1_weights,
            "failure_simulation_ndcg10": simulated,
            "seconds": {s: {p.stem: json.loads(p.read_text()).get("seconds") for p in (out / "runs" / s).glob("*.json")
                            if p.stem != "qrels"} for s in sets}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare-test", "runs", "fit", "table"])
    parser.add_argument("--out", type=Path, default=Path("/work/runs/fusion"))
    parser.add_argument("--proxy", type=Path, default=Path("/work/runs/ablation"), help="ablation_proxy.py prepare's folder")
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    args = parser.parse_args()
    if args.command == "prepare-test":
        prepare_test(args.out, args.proxy)
    elif args.command == "runs":
        runs(args.out, args.proxy, args.model, args.systems)
    elif args.command == "fit":
        fit(args.out)
    else:
        report("adaptive_fusion", table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
