"""Approximate search (faiss HNSW and IVF-PQ with exact re-scoring) against exact search on a
small clustered set: recall, exclusions before the cut, k beyond the index, the CLI; and the
chunked exact search that serves as the reference."""

import json

import numpy as np
import pytest

from t1 import T1Error
from t1.cli import main
from t1.index import Index
from t1.index.ann import build, check, default_nlist, default_pq_m, recall_at_k

N, DIM, CLUSTERS, K = 4000, 32, 40, 10


def clustered(n, seed, centers):
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, DIM)).astype(np.float32) * 0.15
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    centers = np.random.default_rng(0).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    emb, queries = clustered(N, 1, centers), clustered(60, 2, centers)
    folder = tmp_path_factory.mktemp("ann") / "idx"
    index = Index.from_embeddings(folder, emb, [f"d{i}" for i in range(N)], titles=[f"t{i}" for i in range(N)],
                                  shard_size=1500)
    build(index, "hnsw", show_progress_bar=False)
    build(index, "ivf-pq", show_progress_bar=False)
    return folder, queries


@pytest.fixture
def index(data):
    return Index.open(data[0])


@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_recall_against_exact(index, data, kind):
    queries = data[1]
    exact_s, exact_p = index.search_positions(queries, K, ann="exact")
    s, p = index.search_positions(queries, K, ann=kind)
    assert recall_at_k(p, exact_p) >= 0.9  # measured: 0.99+ (hnsw) and 0.97+ (ivf-pq)
    # the scores are exact inner products of the stored vectors, whatever found them
    same = p == exact_p
    np.testing.assert_allclose(s[same], exact_s[same], atol=1e-5)
    assert np.all(np.diff(s, axis=1) <= 0)
    # a tighter search gets closer: more lists probed / a longer candidate list
    wide = {"ef_search": 400} if kind == "hnsw" else {"nprobe": 64, "refine": 1000}
    assert recall_at_k(index.search_positions(queries, K, ann=kind, **wide)[1], exact_p) >= 0.98


@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_exclusions_apply_before_the_cut(index, data, kind):
    queries = data[1]
    _, exact_p = index.search_positions(queries, K, ann="exact")
    ids = index.ids
    # each query loses its 3 best documents; one loses 200 (more than any candidate pool holds)
    exclude = [{ids[j] for j in row[:3]} for row in exact_p]
    exclude[0] |= {f"d{j}" for j in range(200)} | {"no-such-id"}
    hits = index.search(queries, K, exclude=exclude, ann=kind)
    truth = index.search(queries, K, exclude=exclude, ann="exact")
    assert all(len(h) == K for h in hits)
    assert all(not ({x.id for x in h} & ex) for h, ex in zip(hits, exclude))
    found = sum(len({x.id for x in h} & {x.id for x in t}) for h, t in zip(hits, truth))
    assert found / (K * len(queries)) >= 0.9
    # the excluded ids really were top hits without the exclusion
    assert all(ex & {x.id for x in h} for h, ex in zip(index.search(queries[1:], K, ann=kind), exclude[1:]))


def test_defaults_prefix_and_settings(index, data):
    queries = data[1]
    assert index.ann_kinds == ["hnsw", "ivf-pq"]
    auto = index.search_positions(queries, K)  # "auto": HNSW when it exists
    np.testing.assert_array_equal(auto[1], index.search_positions(queries, K, ann="hnsw")[1])
    for kind in ("hnsw", "ivf-pq"):
        ten = index.search_positions(queries, K, ann=kind)[1]
        five = index.search_positions(queries, 5, ann=kind)[1]
        np.testing.assert_array_equal(five, ten[:, :5])  # a shorter list is a prefix of a longer one
    index.use_ann("exact")
    np.testing.assert_array_equal(index.search_positions(queries, K)[1],
                                  index.search_positions(queries, K, ann="exact")[1])
    with pytest.raises(T1Error, match="ann must be"):
        index.use_ann("lsh")
    with pytest.raises(T1Error, match="ef_search must be a positive"):
        index.use_ann("hnsw", ef_search=0)
    info = index.manifest["ann"]["ivf-pq"]
    assert info["params"]["nlist"] == default_nlist(N) and info["params"]["pq_m"] == default_pq_m(DIM) == 4
    assert info["train_rows"] == N and info["params"]["refine_index"] == "fp16"


def test_k_beyond_the_index_and_small_indexes(tmp_path):
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((20, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = Index.from_embeddings(tmp_path / "small", emb, [f"s{i}" for i in range(20)], shard_size=7)
    build(index, "hnsw", show_progress_bar=False)
    hits = index.search(emb[:2], k=50, exclude=[{"s0", "s5"}, set()], ann="hnsw")
    assert [len(h) for h in hits] == [18, 20]
    assert {h.id for h in hits[1]} == {f"s{i}" for i in range(20)} and hits[1][0].id == "s1"
    exact = index.search(emb[:2], k=50, exclude=[{"s0", "s5"}, set()], ann="exact")
    assert [[h.id for h in row] for row in hits] == [[h.id for h in row] for row in exact]
    with pytest.raises(T1Error, match="ivf-pq needs at least"):
        build(index, "ivf-pq")
    with pytest.raises(T1Error, match="no ivf-pq structure"):
        index.search(emb[:1], k=3, ann="ivf-pq")


def test_stale_structure_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((30, 8)).astype(np.float32)
    index = Index.from_embeddings(tmp_path / "i", emb, [f"x{i}" for i in range(30)])
    build(index, "hnsw", show_progress_bar=False)
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    manifest["ann"]["hnsw"]["corpus_hash"] = "something else"
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(T1Error, match="built over other vectors"):
        Index.open(tmp_path / "i").search(emb[:1], k=3)


def test_chunked_reads_match_whole_arrays(index, data):
    """Exact search reads the shards in row chunks: any chunk size, across shard edges, gives the
    same ranking as the whole matrix."""
    queries = data[1][:8]
    emb = index.embeddings()
    full = np.argsort(-(queries @ emb.T), axis=1, kind="stable")[:, :K]
    for rows in (333, 1500, 100000):
        index.chunk_rows = rows
        np.testing.assert_array_equal(index.search_positions(queries, K, ann="exact")[1], full)
    index.chunk_rows = None
    assert [c[0] for c in index.chunks(1000)] == [0, 1000, 1500, 2500, 3000]  # shards of 1500, 1500, 1000
    hits = index.search(queries[:1], 3, ann="exact")[0]
    assert hits[0].id == f"d{full[0, 0]}" and hits[0].title == f"t{full[0, 0]}"
    assert "_docs" not in index.__dict__  # hits were read line by line, not by loading every document


def test_cli_ann_build_check_and_search(tmp_path, data, tiny_model_path, capsys):
    folder = data[0]
    result = check(Index.open(folder), "ivf-pq", queries=50, nprobe=64, refine=1000)
    assert result["recall"] >= 0.95 and result["queries"] == 50
    assert main(["ann", "check", "--index", str(folder), "--queries", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "hnsw" and out["recall"] >= 0.9 and out["settings"] == {"ef_search": 128}

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"c{i}", "title": w, "text": f"{w} water rock"}) + "\n"
                              for i, w in enumerate(["river", "prime", "cell", "robot", "solar"])))
    out = tmp_path / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out),
                 "--device", "cpu", "--ann", "hnsw"]) == 0
    assert "+ hnsw" in capsys.readouterr().out and (out / "ann-hnsw.faiss").exists()

    def search(*extra):
        assert main(["search", "--index", str(out), "--device", "cpu", "--json", "--reasoning", "none", "-k", "10",
                     *extra, "river water", "prime"]) == 0
        return [[h["id"] for h in r["hits"]] for r in json.loads(capsys.readouterr().out)]

    approx = search("--ef-search", "16")
    assert approx == search("--ann", "exact") and all(len(h) == 5 for h in approx)
    assert main(["ann", "build", "--index", str(out), "--kind", "ivf-pq"]) == 2
    assert "ivf-pq needs at least 1000 vectors" in capsys.readouterr().err
    assert main(["search", "--index", str(out), "--device", "cpu", "--ann", "ivf-pq", "q"]) == 2
    assert "no ivf-pq structure" in capsys.readouterr().err
    assert main(["ann", "build", "--index", str(out), "--kind", "hnsw", "--m", "8", "--ef-construction", "20"]) == 0
    assert "built hnsw over 5 vectors" in capsys.readouterr().out
