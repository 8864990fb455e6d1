"""Integrations: sentence-transformers argument names, hub T1 checkpoints (a tiny Qwen3 whose
tokenizer already holds <emb_token>), the mteb encoder, and the LangChain / LlamaIndex adapters,
each with its library's own in-memory store. All offline, on the tiny models."""

import json

import numpy as np
import pytest
import torch
from integration_helpers import fixture_bright_load_dataset, local_retrieval_task
from tiny_qwen3 import EMB_TOKEN, PADDED_ROWS, build_tiny_qwen3

from t1 import QueryEmbeddings, T1Error, T1Model
from t1.bright_tasks import BRIGHT_LONG_TASKS, BRIGHT_TASKS, bright_instruction


@pytest.fixture(scope="module")
def tiny_qwen3_path(tmp_path_factory):
    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "model")


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_path):
    return T1Model.from_pretrained(str(tiny_qwen3_path), device="cpu", max_new_tokens=4)


def _importorskip(module: str, extra: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[{extra}]' or '.[test]')")


def rank_and_score(model, queries, instruction, documents, qrels, candidates=None, **encode):
    """What an mteb retrieval run must come to, computed without mteb: `queries` ({qid: text})
    reason and embed with `instruction`, `documents` ({id: text}) embed with the model's document
    instruction, each query scores its `candidates` (default: every document) by cosine, and
    nDCG@10 comes from t1's own metric (pytrec_eval). Returns (nDCG@10, scores, traces)."""
    from t1.evaluation.metrics import evaluate

    q = model.encode_query(list(queries.values()), instruction=instruction, reasoning="generate", **encode)
    d = model.encode_document(list(documents.values()), instruction=model.config.document_instruction)
    cos = q.embeddings @ d.T  # both L2-normalised
    ids = list(documents)
    scores = {qid: {ids[j]: float(cos[i, j]) for j in range(len(ids))
                    if candidates is None or ids[j] in candidates[qid]} for i, qid in enumerate(queries)}
    return evaluate(qrels, scores, cutoffs=(10,)).mean["ndcg@10"], scores, q.reasoning


def bright_fixture_expected(model, task: str, **encode):
    """`rank_and_score` for mteb's BRIGHT v1.1 task `task` as it loads tests/fixtures/bright
    (a domain without its own fixture file reads the biology one, as `fixture_bright_load_dataset`
    serves it): BRIGHT's query instruction, candidates without each query's excluded ids."""
    from integration_helpers import BRIGHT_FIXTURE

    def rows(part):
        file = BRIGHT_FIXTURE / part / f"{task}.jsonl"
        file = file if file.exists() else BRIGHT_FIXTURE / part / "biology.jsonl"
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    examples, documents = rows("examples"), {d["id"]: d["content"] for d in rows("documents")}
    candidates = {e["id"]: set(documents) - set(e["excluded_ids"]) for e in examples}
    qrels = {e["id"]: dict.fromkeys(e["gold_ids"], 1) for e in examples}
    return rank_and_score(model, {e["id"]: e["query"] for e in examples}, bright_instruction(task), documents,
                          qrels, candidates, **encode)


def assert_same_scores(predicted: dict, expected: dict):
    """mteb's predictions ({qid: {doc: score}}) are the scores computed without it."""
    assert set(predicted) == set(expected)
    for qid, docs in expected.items():
        assert set(predicted[qid]) == set(docs), qid
        np.testing.assert_allclose([predicted[qid][d] for d in docs], list(docs.values()), atol=1e-4, err_msg=qid)


# ------------------------------------------------------------------ sentence-transformers names
def test_prompt_is_the_instruction_and_prompt_name_names_one(tiny_model):
    m, docs = tiny_model, ["cell protein gene", "river rock climate"]
    np.testing.assert_allclose(m.encode_document(docs, prompt="Represent the passage"),
                               m.encode_document(docs, instruction="Represent the passage"), atol=1e-6)
    q = m.encode_query("why do cells divide", prompt_name="biology", reasoning="none")
    np.testing.assert_allclose(q.embeddings, m.encode_query("why do cells divide", reasoning="none",
                                                            instruction=bright_instruction("biology")).embeddings, atol=1e-6)
    assert m.instruction_for("theoremqa_theorems") == bright_instruction("theoremqa_theorems")
    assert m.instruction_for("biology_long") == bright_instruction("biology", long=True)
    assert m.instruction_for("biology", side="document") == m.config.document_instruction
    assert m.instruction_for("query") == m.config.query_instruction
    assert m.instruction_for("passage") == m.instruction_for("document") == m.config.document_instruction
    # a prompt given outright wins over prompt_name, as in sentence-transformers
    np.testing.assert_allclose(m.encode_document(docs, prompt="Represent the passage", prompt_name="biology"),
                               m.encode_document(docs, instruction="Represent the passage"), atol=1e-6)
    with pytest.raises(T1Error, match="unknown prompt_name 'nope'"):
        m.encode_query("x", prompt_name="nope", reasoning="none")
    with pytest.raises(T1Error, match="not both"):
        m.encode_document(docs, instruction="a", prompt="b")


def test_named_prompts_setting(tiny_model_path):
    m = T1Model.from_pretrained(str(tiny_model_path), device="cpu", prompts={"claims": "Given a claim, find evidence"})
    assert m.instruction_for("claims") == m.instruction_for("claims", side="document") == "Given a claim, find evidence"
    np.testing.assert_allclose(m.encode_document("solar energy", prompt_name="claims"),
                               m.encode_document("solar energy", instruction="Given a claim, find evidence"), atol=1e-6)


def test_normalize_embeddings_alias(tiny_model):
    raw = tiny_model.encode_document(["solar energy", "prime"], normalize_embeddings=False)
    np.testing.assert_allclose(raw, tiny_model.encode_document(["solar energy", "prime"], normalize=False), atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    unit = tiny_model.encode_query(["why"], reasoning="none", normalize_embeddings=True).embeddings
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    with pytest.raises(T1Error, match="disagree"):
        tiny_model.encode_document("x", normalize=True, normalize_embeddings=False)


def test_output_forms_and_device(tiny_model):
    m, docs = tiny_model, ["cell protein gene", "river rock climate", "prime"]
    arr = m.encode_document(docs, batch_size=2)
    assert isinstance(arr, np.ndarray) and arr.shape == (3, m.dim)  # the default is unchanged
    t = m.encode_document(docs, convert_to_tensor=True, device="cpu", show_progress_bar=False)
    assert isinstance(t, torch.Tensor) and t.shape == (3, m.dim) and t.device == m.device
    torch.testing.assert_close(t, torch.from_numpy(arr))
    as_list = m.encode_document(docs, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == 3 and all(x.shape == (m.dim,) for x in as_list)
    one = m.encode_document("prime", convert_to_tensor=True)
    assert one.shape == (m.dim,)
    assert isinstance(m.encode_document("prime", convert_to_numpy=False), torch.Tensor)
    np.testing.assert_allclose(m.encode_document(docs, convert_to_numpy=True), arr, atol=1e-6)

    q = m.encode_query(["why do cells divide", "river"], reasoning="none")
    assert isinstance(q, QueryEmbeddings)  # the default return keeps the reasoning
    qa = m.encode_query(["why do cells divide", "river"], reasoning="none", convert_to_numpy=True)
    assert isinstance(qa, np.ndarray)
    np.testing.assert_allclose(qa, q.embeddings, atol=1e-6)
    qt = m.encode_query("why do cells divide", reasoning="none", convert_to_tensor=True)
    assert isinstance(qt, torch.Tensor) and qt.shape == (m.dim,)
    scores = m.encode_query(["why"], reasoning="none", convert_to_tensor=True) @ t.T
    assert scores.shape == (1, 3)
    with pytest.raises(T1Error, match="one device"):
        m.encode_document("x", device=["cpu", "cpu"])


# ------------------------------------------------------------------ hub T1 checkpoints
def test_checkpoint_whose_tokenizer_has_the_token_keeps_its_row(tiny_qwen3_path, qwen3):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_qwen3_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_path)
    existing = tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    assert type(qwen3.backbone).__name__ == "Qwen3ForCausalLM"
    assert qwen3.emb_token_id == existing and len(qwen3.tokenizer) == len(tokenizer)  # no token added
    rows = qwen3.backbone.get_input_embeddings().weight
    assert rows.shape[0] == base.get_input_embeddings().weight.shape[0] == len(tokenizer) + PADDED_ROWS  # no resize
    torch.testing.assert_close(rows[existing], base.get_input_embeddings().weight[existing])  # the trained row, not a mean
    assert not torch.allclose(rows[existing], base.get_input_embeddings().weight[:existing].mean(dim=0))
    assert qwen3.tokenizer("a <emb_token>", add_special_tokens=False)["input_ids"][-1] == existing
    assert qwen3.prompts.document("solar energy", "", 64)[-1] == existing
    q = qwen3.encode_query(["why do cells divide"], prompt_name="biology")
    assert q.embeddings.shape == (1, 64) and len(q.reasoning) == 1


def test_checkpoint_loads_bf16_on_gpu(tiny_qwen3_path, monkeypatch):
    """The dtype a CUDA device gets, checked without a GPU: moving to the device is skipped."""
    monkeypatch.setattr(T1Model, "to", lambda self, *a, **k: self)
    model = T1Model.from_pretrained(str(tiny_qwen3_path), device="cuda")
    assert model.backbone.dtype == torch.bfloat16
    monkeypatch.undo()
    cpu = T1Model.from_pretrained(str(tiny_qwen3_path), device="cpu", dtype="bfloat16")
    assert cpu.backbone.dtype == torch.bfloat16
    assert cpu.encode_document("solar energy").dtype == np.float32


def test_checkpoint_takes_instructions_from_the_task(tiny_qwen3_path, qwen3, tmp_path):
    """No t1_config.json: queries take BRIGHT's instruction per task, in Python and in `t1 bright`."""
    assert not (tiny_qwen3_path / "t1_config.json").exists()
    for task in ("leetcode", "pony"):
        a = qwen3.encode_query("two sum", prompt_name=task, reasoning="none").embeddings
        b = qwen3.encode_query("two sum", instruction=bright_instruction(task), reasoning="none").embeddings
        np.testing.assert_allclose(a, b, atol=1e-6)
    from integration_helpers import BRIGHT_FIXTURE

    from t1.evaluation.bright import run_bright
    from t1.settings import QuerySettings

    out = tmp_path / "bright"
    summary = run_bright(f"t1:{tiny_qwen3_path}", out, source=str(BRIGHT_FIXTURE), tasks=["leetcode"],
                         query=QuerySettings(max_new_tokens=4), device="cpu", log=lambda s: None, show_progress=False)
    assert summary["num_tasks"] == 1
    settings = json.loads((out / "leetcode" / "run.json").read_text())["settings"]
    assert settings["query_instruction"] == bright_instruction("leetcode")


# ------------------------------------------------------------------ mteb
def test_mteb_bright_task_names():
    _importorskip("mteb", "mteb")
    import mteb

    from t1.integrations.mteb import bright_task

    short = [t for t in mteb.get_benchmark("BRIGHT(v1.1)").tasks if "Long" not in t.metadata.name]
    long = [t for t in mteb.get_benchmark("BRIGHT(v1.1)").tasks if "Long" in t.metadata.name]
    assert sorted(bright_task(t.metadata.name) for t in short) == sorted((t, False) for t in BRIGHT_TASKS)
    assert sorted(bright_task(t.metadata.name) for t in long) == sorted((t, True) for t in BRIGHT_LONG_TASKS)
    assert bright_task("BrightRetrieval", "aops") == ("aops", False)
    assert bright_task("BrightLongRetrieval", "pony") == ("pony", True)
    assert bright_task("BrightProBiologyRetrieval") is None and bright_task("SciFact") is None


def test_mteb_instruction_comes_from_the_task(tiny_model):
    _importorskip("mteb", "mteb")
    import mteb
    from mteb.types import PromptType

    from t1.integrations.mteb import T1Encoder

    enc = T1Encoder(tiny_model)
    bio = mteb.get_task("BrightBiologyRetrieval").metadata
    assert bio.prompt["query"].startswith("Represent this biology post")  # mteb's, replaced by BRIGHT's
    assert enc.instruction(bio, PromptType.query) == bright_instruction("biology")
    assert enc.instruction(bio, PromptType.document) == tiny_model.config.document_instruction
    long = mteb.get_task("BrightPonyLongRetrieval").metadata
    assert enc.instruction(long, PromptType.query) == bright_instruction("pony", long=True)
    task = local_retrieval_task(prompt={"query": "Given a question, retrieve passages that answer it: "}).metadata
    assert enc.instruction(task, PromptType.query) == "Given a question, retrieve passages that answer it"
    assert enc.instruction(task, PromptType.document) == tiny_model.config.document_instruction
    bare = local_retrieval_task(prompt=None).metadata
    assert enc.instruction(bare, PromptType.query) == tiny_model.config.query_instruction
    custom = T1Encoder(tiny_model, model_prompts={"BrightBiologyRetrieval-query": "Mine", "document": "Doc"})
    assert custom.instruction(bio, PromptType.query) == "Mine"
    assert custom.instruction(bio, PromptType.document) == "Doc"
    meta = enc.mteb_model_meta
    assert meta.embed_dim == tiny_model.dim and meta.revision == tiny_model.fingerprint() and "/" in meta.name


def test_mteb_evaluate_local_task_reasons_for_queries_and_honours_exclusions(tiny_model, tmp_path, monkeypatch):
    _importorskip("mteb", "mteb")
    import mteb

    from t1.integrations.mteb import T1Encoder

    instruction = "Given a question, retrieve passages that answer it"
    task = local_retrieval_task(prompt={"query": instruction + ":"})
    task.load_data()
    split = task.dataset["default"]["test"]
    expected, expected_scores, traces = rank_and_score(
        tiny_model, {q["id"]: q["text"] for q in split["queries"]}, instruction,
        {d["id"]: d["text"] for d in split["corpus"]}, split["relevant_docs"],
        {qid: set(ids) for qid, ids in split["top_ranked"].items()}, max_new_tokens=4)

    calls = []
    for method in ("encode_query", "encode_document"):
        real = getattr(type(tiny_model), method)

        def spy(self, texts, *a, _real=real, _name=method, **kw):
            calls.append((_name, list(texts), kw.get("instruction"), kw.get("reasoning")))
            return _real(self, texts, *a, **kw)

        # On the class: monkeypatch restores an instance attribute by setting it again, which would
        # leave a bound method on the shared model that hides later class-level patches.
        monkeypatch.setattr(type(tiny_model), method, spy)
    enc = T1Encoder(tiny_model, max_new_tokens=4)
    task = local_retrieval_task(prompt={"query": instruction + ":"})
    results = mteb.evaluate(enc, task, cache=None, prediction_folder=tmp_path, show_progress_bar=False)
    # mteb's nDCG@10 is the one computed without mteb, from the same model's embeddings
    assert results.task_results[0].get_score() == pytest.approx(expected, abs=1e-4)
    queries = [c for c in calls if c[0] == "encode_query"]
    docs = [c for c in calls if c[0] == "encode_document"]
    assert [q[1] for q in queries] == [["why do cells divide", "how do rivers carve rock"]]
    assert queries[0][2] == "Given a question, retrieve passages that answer it" and queries[0][3] == "generate"
    assert sorted(t for d in docs for t in d[1]) == sorted(["cells divide by mitosis to grow and repair tissue",
                                                            "rivers carve rock over millions of years",
                                                            "why do cells divide", "prime numbers have exactly two divisors"])
    assert enc.traces["T1LocalRetrieval"] == traces
    predictions = json.loads((tmp_path / "T1LocalRetrieval_predictions.json").read_text())["default"]["test"]
    assert set(predictions["q1"]) == {"d1", "d2", "d4"}  # d3 (the query itself) is excluded for q1
    assert set(predictions["q2"]) == {"d1", "d2", "d3", "d4"}
    assert_same_scores(predictions, expected_scores)


def test_mteb_bright_leetcode_excluded_ids_never_ranked(tiny_qwen3_path, tmp_path, monkeypatch):
    """mteb's own BRIGHT v1.1 loader, fed the local fixture: its excluded ids become mteb's
    candidates, and an excluded document never reaches the predictions."""
    _importorskip("mteb", "mteb")
    import datasets
    import mteb

    from t1.integrations.mteb import T1Encoder

    monkeypatch.setattr(datasets, "load_dataset", fixture_bright_load_dataset(datasets.load_dataset))
    excluded = {}
    from integration_helpers import BRIGHT_FIXTURE

    for line in (BRIGHT_FIXTURE / "examples" / "leetcode.jsonl").read_text().splitlines():
        row = json.loads(line)
        excluded[row["id"]] = {d for d in row["excluded_ids"] if d != "N/A"}
    assert any(excluded.values())
    enc = T1Encoder(str(tiny_qwen3_path), device="cpu", max_new_tokens=4)
    expected, expected_scores, traces = bright_fixture_expected(enc.model, "leetcode", max_new_tokens=4)
    task = mteb.get_task("BrightLeetcodeRetrieval")
    results = mteb.evaluate(enc, task, cache=None, prediction_folder=tmp_path, show_progress_bar=False)
    assert results.task_results[0].get_score() == pytest.approx(expected, abs=1e-4)
    assert enc.traces["BrightLeetcodeRetrieval"] == traces
    predictions = json.loads((tmp_path / "BrightLeetcodeRetrieval_predictions.json").read_text())["default"]["standard"]
    corpus = {json.loads(line)["id"] for line in (BRIGHT_FIXTURE / "documents" / "leetcode.jsonl").read_text().splitlines()}
    for qid, ranked in predictions.items():
        assert not set(ranked) & excluded[qid]
        assert set(ranked) == corpus - excluded[qid]
    assert_same_scores(predictions, expected_scores)


# ------------------------------------------------------------------ LangChain
DOCS = ["cells divide by mitosis", "rivers carve rock over time", "prime numbers and integer proofs"]


def test_langchain_embeddings_with_in_memory_vector_store(tiny_model):
    _importorskip("langchain_core", "langchain")
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from t1.integrations.langchain import T1Embeddings

    emb = T1Embeddings(tiny_model, max_new_tokens=4)
    assert isinstance(emb, Embeddings)
    vectors = emb.embed_documents(DOCS)
    assert isinstance(vectors, list) and len(vectors) == 3 and all(isinstance(x, float) for x in vectors[0])
    np.testing.assert_allclose(vectors, tiny_model.encode_document(DOCS), atol=1e-6)
    assert emb.embed_documents([]) == []
    query = emb.embed_query("why do cells divide")
    expected = tiny_model.encode_query("why do cells divide", max_new_tokens=4)
    np.testing.assert_allclose(query, expected.embeddings, atol=1e-5)
    assert emb.last_reasoning == expected.reasoning

    store = InMemoryVectorStore(emb)
    ids = store.add_documents([Document(page_content=t, id=str(i)) for i, t in enumerate(DOCS)])
    assert ids == ["0", "1", "2"]
    hits = store.similarity_search_with_score("why do cells divide", k=2)
    assert len(hits) == 2 and hits[0][1] >= hits[1][1]
    scores = np.array(tiny_model.encode_document(DOCS)) @ np.array(query)
    assert hits[0][0].page_content == DOCS[int(np.argmax(scores))]
    with pytest.raises(TypeError, match="loaded already"):
        T1Embeddings(tiny_model, device="cpu")


# ------------------------------------------------------------------ LlamaIndex
def test_llamaindex_embedding_with_in_memory_vector_store(tiny_model):
    _importorskip("llama_index.core", "llamaindex")
    from llama_index.core import VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import TextNode

    from t1.integrations.llamaindex import T1Embedding

    emb = T1Embedding(tiny_model, max_new_tokens=4, embed_batch_size=2)
    assert isinstance(emb, BaseEmbedding) and emb.model is tiny_model and emb.model_name == tiny_model.name_or_path
    np.testing.assert_allclose(emb.get_text_embedding_batch(DOCS), tiny_model.encode_document(DOCS), atol=1e-6)
    query = emb.get_query_embedding("why do cells divide")
    expected = tiny_model.encode_query("why do cells divide", max_new_tokens=4)
    np.testing.assert_allclose(query, expected.embeddings, atol=1e-5)
    assert emb.last_reasoning == expected.reasoning

    index = VectorStoreIndex([TextNode(text=t, id_=str(i)) for i, t in enumerate(DOCS)], embed_model=emb)
    hits = index.as_retriever(similarity_top_k=2).retrieve("why do cells divide")
    assert len(hits) == 2 and hits[0].score >= hits[1].score
    scores = np.array(tiny_model.encode_document(DOCS)) @ np.array(query)
    assert hits[0].node.get_content() == DOCS[int(np.argmax(scores))]


# ------------------------------------------------------------------ vector stores over an index folder (#36)
def test_langchain_vector_store_over_an_index_folder(tiny_model, tmp_path):
    _importorskip("langchain_core", "langchain")
    from langchain_core.documents import Document

    from t1.index import Index
    from t1.integrations.langchain import T1Embeddings, T1VectorStore

    emb = T1Embeddings(tiny_model, reasoning="none")
    store = T1VectorStore(tmp_path / "idx", emb)
    assert store.similarity_search("cells", k=2) == []
    assert store.add_documents([Document(page_content=t, id=str(i)) for i, t in enumerate(DOCS)]) == ["0", "1", "2"]
    store.add_texts(["volcano lava eruption"], [{"title": "Volcanoes"}], ids=["v"])
    assert len(Index.open(tmp_path / "idx")) == 4 and Index.open(tmp_path / "idx").generation == 1
    hits = store.similarity_search_with_score("volcano lava eruption", k=4)
    q = tiny_model.encode_query("volcano lava eruption", reasoning="none").embeddings
    want = Index.open(tmp_path / "idx").search(q, k=4)[0]
    assert [(d.id, round(s, 5)) for d, s in hits] == [(h.id, round(h.score, 5)) for h in want]
    assert any(d.metadata["title"] == "Volcanoes" for d, _ in hits)
    assert store.delete(["v"]) is True and store.delete(["v"]) is False
    assert "v" not in [d.id for d in store.similarity_search("volcano", k=4)]


def test_llamaindex_vector_store_over_an_index_folder(tiny_model, tmp_path):
    _importorskip("llama_index.core", "llamaindex")
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode

    from t1.index import Index
    from t1.integrations.llamaindex import T1Embedding, T1VectorStore

    emb = T1Embedding(tiny_model, reasoning="none")
    store = T1VectorStore(tmp_path / "idx", tiny_model)
    index = VectorStoreIndex([TextNode(text=t, id_=str(i)) for i, t in enumerate(DOCS)], embed_model=emb,
                             storage_context=StorageContext.from_defaults(vector_store=store))
    index.insert_nodes([TextNode(text="volcano lava eruption", id_="v", metadata={"title": "Volcanoes"})])
    assert len(Index.open(tmp_path / "idx")) == 4
    hits = index.as_retriever(similarity_top_k=4).retrieve("volcano lava eruption")
    q = tiny_model.encode_query("volcano lava eruption", reasoning="none").embeddings
    want = Index.open(tmp_path / "idx").search(q, k=4)[0]
    assert [(h.node.node_id, round(h.score, 5)) for h in hits] == [(w.id, round(w.score, 5)) for w in want]
    store.delete("v")
    assert "v" not in [h.node.node_id for h in index.as_retriever(similarity_top_k=4).retrieve("volcano")]
