import numpy as np
import pytest

from t1.index.search import exact_search


def _chunks(emb, size):
    return [(s, emb[s : s + size]) for s in range(0, len(emb), size)]


def brute_force(q, emb, k, excluded):
    scores = q @ emb.T
    for qi, ex in enumerate(excluded):
        scores[qi, ex] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_chunked_search_matches_brute_force_with_exclusions(backend):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1000, 32)).astype(np.float32)
    q = rng.standard_normal((7, 32)).astype(np.float32)
    truth_top = brute_force(q, emb, 5, [[] for _ in q])
    # exclude each query's two best documents: they must vanish and the next ones move up
    excluded = [np.sort(truth_top[i, :2]) for i in range(len(q))]
    scores, pos = exact_search(q, _chunks(emb, 128), k=5, excluded=excluded, backend=backend)
    np.testing.assert_array_equal(pos, brute_force(q, emb, 5, excluded))
    for i in range(len(q)):
        assert not set(pos[i]) & set(excluded[i])
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_numpy_and_faiss_agree():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((5000, 64)).astype(np.float32)
    q = rng.standard_normal((20, 64)).astype(np.float32)
    a = exact_search(q, _chunks(emb, 999), 10, backend="numpy")
    b = exact_search(q, _chunks(emb, 999), 10, backend="faiss")
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)


def test_fewer_candidates_than_k():
    emb = np.eye(3, dtype=np.float32)
    scores, pos = exact_search(np.eye(3, dtype=np.float32)[:1], [(0, emb)], k=5, excluded=[np.array([1])], backend="numpy")
    assert list(pos[0]) == [0, 2, -1, -1, -1]
