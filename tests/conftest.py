import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub (it reads these once): tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Documents through the reference engine on every host: the default (bf16 where the CPU has native
# bf16, `t1.encoders`) differs between hosts; tests/test_encoders.py tests each engine by name.
os.environ["T1_DOCUMENT_ENGINE"] = "hf"

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from t1 import T1Model

    return T1Model.from_pretrained(str(tiny_model_path), device="cpu")


FUSION_WEIGHT = 0.3  # the weighted model's saved T1 weight


@pytest.fixture(scope="session")
def weighted_model_path(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny model saved with a measured fusion weight: its default search is hybrid."""
    from t1 import T1Model

    folder = tmp_path_factory.mktemp("weighted") / "model"
    T1Model.from_pretrained(str(tiny_model_path), device="cpu", fusion_weight=FUSION_WEIGHT).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("T1_CACHE", str(tmp_path / "t1-cache"))


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def one_thread():
    """Tiny-model matmuls are smaller than a thread hand-off: on two busy cores one OpenMP
    thread runs these steps several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



@pytest.fixture
def engine_calls(tiny_model):
    """Records the prompts of every rollout the tiny model's generation engine runs (the engine
    itself still runs); the list of calls is yielded."""
    inner, calls = tiny_model.engine, []

    class Recording:
        name, exact = inner.name, inner.exact

        def rollout(self, prompts, *args, **kwargs):
            calls.append(prompts)
            return inner.rollout(prompts, *args, **kwargs)

    tiny_model._engine = Recording()
    yield calls
    tiny_model._engine = inner
