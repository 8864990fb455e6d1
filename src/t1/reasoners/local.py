"""Writers run in this process: a GGUF file through llama.cpp (`--reasoner PATH.gguf`) and a
Hugging Face causal LM (`--reasoner hf:NAME_OR_FOLDER`, batched). Both use the model's own chat
template, so any instruct model writes as it was trained to."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterable

from ..errors import T1Error
from .base import Job, Reasoner, ReasonerError, Trace


def file_digest(path: Path) -> str:
    """A digest of a model file's size, mtime and first and last MiB: the file's identity in the
    cache, cheap for a multi-GB GGUF."""
    stat = path.stat()
    h = hashlib.sha256(f"{stat.st_size}:{int(stat.st_mtime)}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, stat.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


class LlamaCppReasoner(Reasoner):
    """A GGUF instruct model run in-process by llama-cpp-python (one request at a time)."""

    kind = "gguf"

    def __init__(self, path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None, **common):
        super().__init__(**common)
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise T1Error(f"reasoner {path}: no such GGUF file")
        try:
            import llama_cpp
        except ImportError:
            raise T1Error("a GGUF reasoner needs llama-cpp-python: pip install 't1[llama-cpp]'") from None
        with self.path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise T1Error(f"reasoner {path}: not a GGUF file")
        self.digest = file_digest(self.path)
        try:
            with _plain_weight_buffers(llama_cpp):
                self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, verbose=False,
                                           n_threads=n_threads or max(1, os.cpu_count() or 1))
        except (ValueError, RuntimeError) as e:
            raise T1Error(f"reasoner {path}: llama.cpp cannot load it ({e})") from None
        atexit.register(self.close)  # before interpreter teardown, which llama.cpp's objects do not survive

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.path.name, "model": self.digest}

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()

    def _write(self, jobs: list[Job]) -> Iterable[tuple[Job, Trace]]:
        for job in jobs:
            sampling = {k: v for k, v in job.sampling.items() if k != "seed"}
            if "seed" in job.sampling:
                self.llm.set_seed(job.sampling["seed"])
            try:
                answer = self.llm.create_chat_completion(job.messages, max_tokens=job.max_tokens, **sampling)
            except (ValueError, RuntimeError) as e:  # e.g. a prompt longer than n_ctx
                raise ReasonerError(f"reasoner {self.path.name}: {e}") from None
            choice = answer["choices"][0]
            text = self.choose(choice["message"].get("content"), None).strip()
            if not text:
                raise ReasonerError(f"reasoner {self.path.name}: empty answer (finish_reason "
                                    f"{choice.get('finish_reason')!r})")
            yield job, Trace(text, choice.get("finish_reason") == "stop")


@contextlib.contextmanager
def _plain_weight_buffers(llama_cpp):
    """On a CPU with AMX, load weights as stored, without llama.cpp's repacked "extra" buffers:
    there, decoding a quantised GGUF (SmolLM2's Q4_1, for one) through them crashed with SIGSEGV
    at the first token, as `t1.generation.llamacpp` found for its q8 engine. llama-cpp-python's
    `Llama` does not expose the setting, so its default parameters are amended while it loads."""
    if not _has_amx():
        yield
        return
    module = llama_cpp.llama_cpp
    default = module.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    module.llama_model_default_params = params
    try:
        yield
    finally:
        module.llama_model_default_params = default


def _has_amx() -> bool:
    try:
        return " amx_" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


class HFReasoner(Reasoner):
    """A Hugging Face causal LM (hub id, folder, or t1's offline backbone alias), generating
    batches of left-padded prompts."""

    kind = "hf"

    def __init__(self, name: str, *, device: str | None = None, batch_size: int = 8, **common):
        super().__init__(**common)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..backbones import resolve_backbone

        self.source = name
        folder = resolve_backbone(name)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise T1Error(f"reasoner hf:{name}: cannot load it ({str(e).strip().splitlines()[0]})") from None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.digest = _weights_digest(self.model)

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.source, "model": self.digest}

    def _render(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n"

    def _write(self, jobs: list[Job]) -> Iterable[tuple[Job, Trace]]:
        import torch

        groups: dict[tuple, list[Job]] = {}
        for job in jobs:  # one generate call per decoding setting
            groups.setdefault((job.max_tokens, tuple(sorted(job.sampling.items()))), []).append(job)
        for (max_tokens, _), group in groups.items():
            for start in range(0, len(group), self.batch_size):
                batch = group[start: start + self.batch_size]
                sampling = batch[0].sampling
                if "seed" in sampling:
                    torch.manual_seed(sampling["seed"] * 7919 + batch[0].row)
                inputs = self.tokenizer([self._render(j.messages) for j in batch], return_tensors="pt", padding=True,
                                        add_special_tokens=False).to(self.device)
                decoding = ({"do_sample": True, "temperature": sampling["temperature"], "top_p": sampling["top_p"]}
                            if sampling["temperature"] > 0 else {"do_sample": False, "temperature": None,
                                                                  "top_p": None, "top_k": None})
                with torch.no_grad():
                    out = self.model.generate(**inputs, max_new_tokens=max_tokens,
                                              pad_token_id=self.tokenizer.pad_token_id, **decoding)
                new = out[:, inputs["input_ids"].shape[1]:]
                eos = self.model.generation_config.eos_token_id
                eos = set([eos] if isinstance(eos, int) else eos or []) | {self.tokenizer.eos_token_id}
                for job, row in zip(batch, new.tolist()):
                    ended = any(t in eos for t in row)
                    text = self.choose(self.tokenizer.decode(row, skip_special_tokens=True), None).strip()
                    if not text:
                        raise ReasonerError(f"reasoner hf:{self.source}: empty answer")
                    yield job, Trace(text, ended)


def _weights_digest(model) -> str:
    """A hash of every weight tensor's bytes: the model's identity in the cache."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
