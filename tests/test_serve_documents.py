"""`t1 serve` updating its index (#36): POST /documents, DELETE /documents/{id} behind the key,
applied by one writer in the background while searches go on, each from one generation."""

import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from t1 import Document
from t1.index import Index
from t1.serve.app import ServeSettings, create_app
from t1.serve.engine import Engine

pytestmark = pytest.mark.usefixtures("one_thread")
KEY = {"X-API-Key": "s3cret"}
DOCS = [Document("d1", "cell protein gene plant", "Leaves"), Document("d2", "river water rock climate", "Rivers"),
        Document("d3", "prime integer theorem proof", "Primes"), Document("d4", "solar energy carbon plant", "Sun")]
NEW = {"id": "volcano", "title": "Volcanoes", "text": "volcano lava magma eruption"}


@pytest.fixture
def client(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("T1_INDEX_RETIRE_S", "60")
    index = Index.build(tiny_model, DOCS, tmp_path / "idx", show_progress_bar=False)
    with TestClient(create_app(Engine(tiny_model, index), ServeSettings(api_key="s3cret", max_new_tokens=4))) as c:
        yield c


def _search(client, query="volcano lava", k=10, **extra):
    r = client.post("/search", json={"query": query, "k": k, "reasoning": "none", **extra}, headers=KEY)
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"][0]["hits"]]


def test_upsert_and_delete_behind_the_key(client):
    assert client.post("/documents", json={"documents": [NEW]}).status_code == 401
    assert client.delete("/documents/d1").status_code == 401
    r = client.post("/documents?wait=true", json={"documents": [NEW, {"id": "d2", "text": "river water rock climate",
                                                                      "title": "Rivers"}]}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == ["volcano"] and body["unchanged"] == ["d2"] and body["generation"] == 1
    assert "volcano" in _search(client) and len(_search(client)) == 5
    assert "volcano" in _search(client, hybrid=True)  # BM25 sees it too
    r = client.delete("/documents/d1?wait=true", headers=KEY)
    assert r.status_code == 200 and r.json()["deleted"] == ["d1"] and r.json()["generation"] == 2
    assert "d1" not in _search(client) and len(_search(client)) == 4
    r = client.delete("/documents/nope?wait=true", headers=KEY)
    assert r.json()["not_found"] == ["nope"] and r.json()["generation"] == 2
    info = client.get("/info", headers=KEY).json()
    assert info["index"]["generation"] == 2 and info["updates"]["updates"] == 3


def test_a_bad_batch_is_refused_whole_with_its_position(client):
    for docs, message in [([NEW, {"id": 3, "text": "x"}], "documents[1].id: expected a string"),
                          ([NEW, {"id": "x"}], "documents[1]: missing 'text'"),
                          ([NEW, {"id": "x", "text": "t", "body": "b"}], "documents[1]: unknown field 'body'"),
                          ([NEW, NEW], "documents[1]: id 'volcano' is given twice"),
                          ([], "documents: give at least one")]:
        r = client.post("/documents?wait=true", json={"documents": docs}, headers=KEY)
        assert r.status_code == 422 and r.json()["detail"].startswith(message), r.text
    assert "volcano" not in _search(client)
    assert client.get("/info", headers=KEY).json()["index"]["generation"] == 0


def test_searches_go_on_during_an_update(client, monkeypatch):
    from t1.index import update

    slow, started = update._switch, threading.Event()

    def switch(*args):
        started.set()
        time.sleep(1.0)
        return slow(*args)

    monkeypatch.setattr(update, "_switch", switch)
    r = client.post("/documents", json={"documents": [NEW]}, headers=KEY)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert started.wait(30)
    t0 = time.perf_counter()
    assert "volcano" not in _search(client)  # served from generation 0 while the update commits
    assert time.perf_counter() - t0 < 1.0
    deadline = time.monotonic() + 30
    while "volcano" not in _search(client):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_updates_by_another_process_are_picked_up(client, tiny_model):
    folder = client.get("/info", headers=KEY).json()["index"]["folder"]
    Index.open(folder).update(tiny_model, [Document(**{**NEW, "title": NEW["title"]})])  # as `t1 index --update`
    assert "volcano" in _search(client)
    Index.open(folder).delete(["volcano"])
    assert "volcano" not in _search(client)
    assert json.loads((Index.open(folder).folder / "manifest.json").read_text())["generation"] == 2
