"""Stage 3: GRPO on reasoning traces, rewarded by how well each trace's embedding retrieves.

For each training query the policy samples G traces; each trace is embedded at `<emb_token>`
and scored against a candidate pool (the query's positives, its hard negatives, the other
queries' documents in the batch) by `rewards.trace_reward`. Group-normalised advantages, the
clipped surrogate, the optional KL to the reference and vLLM rollouts are TRL's GRPOTrainer.

Why TRL rather than our own loop: a TRL reward function is any callable, so ours is an object
holding the live `T1Model`, whose backbone *is* the policy being trained. It re-embeds
prompt + trace + `<emb_token>` with the current weights under no_grad (one forward pass, like
the log-prob pass TRL already makes), which works whichever backend generated the trace, vLLM
included. The subclass adds only what TRL lacks: the query index on each rollout row, the
optional contrastive term in the loss, and T1's settings next to each checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import PartialState
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from ..atomic import atomic_open, write_json
from ..backbones import DEFAULT_BACKBONE
from ..errors import T1Error
from ..prompts import PromptBuilder
from .collator import RecordDataset, text_key
from .config import LoraSettings
from .losses import info_nce
from .records import Record, read_records
from .reward_curve import METRICS_FILE, plot_rewards, read_metrics
from .rewards import RewardConfig, trace_reward

logger = logging.getLogger(__name__)

FINAL_DIR = "final"


# ---------------------------------------------------------------------------- configuration
@dataclass
class GenerationSettings:
    num_generations: int = 8  # G traces per query
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off


@dataclass
class GRPOStageConfig:
    """Stage-3 settings. Names shared with stages 1/2 (`TrainConfig`) mean the same; `training:`
    goes verbatim to TRL's `GRPOConfig` (a `TrainingArguments`: learning_rate, beta, epsilon,
    loss_type, max_steps, per_device_train_batch_size, use_vllm, deepspeed, ...)."""

    model: str = DEFAULT_BACKBONE  # the stage-2 output, usually
    train_file: str = ""  # records {query, pos, neg, instruction?, document_instruction?}
    output_dir: str = ""
    dtype: str = "auto"
    query_instruction: str | None = None
    document_instruction: str | None = None
    model_settings: dict = field(default_factory=dict)  # T1Config fields saved with the model
    max_query_length: int = 256
    max_document_length: int = 256
    max_queries: int | None = None  # use the first N records
    negatives_per_query: int = 7  # hard negatives per query, in the reward pool and the contrastive term
    doc_refresh_steps: int = 10  # K: pool document embeddings are recomputed every K steps
    embed_batch_size: int = 16
    temperature: float = 0.05  # of the contrastive term
    contrastive_weight: float = 0.0  # weight of InfoNCE added to the policy loss; 0: off
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    reward: RewardConfig = field(default_factory=RewardConfig)
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # as stages 1/2; null: full weights
    resume: bool | str = True  # true: the newest checkpoint in output_dir; or a checkpoint folder
    training: dict = field(default_factory=dict)

    def validate(self) -> None:
        for key in ("train_file", "output_dir"):
            if not getattr(self, key):
                raise T1Error(f"config: {key} is not set")
        g = self.generation
        if g.num_generations < 2:
            raise T1Error("config: generation.num_generations must be >= 2 (advantages are relative to the group)")
        if g.max_new_tokens < 1:
            raise T1Error("config: generation.max_new_tokens must be >= 1")
        if self.doc_refresh_steps < 1:
            raise T1Error("config: doc_refresh_steps must be >= 1")
        if self.contrastive_weight < 0 or self.temperature <= 0:
            raise T1Error("config: contrastive_weight must be >= 0 and temperature > 0")
        if self.negatives_per_query < 0:
            raise T1Error("config: negatives_per_query must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def grpo_config_from_dict(data: dict, where: str = "config") -> GRPOStageConfig:
    data = dict(data)
    _reject_unknown(GRPOStageConfig, data, where, "")
    gen = dict(data.get("generation") or {})
    _reject_unknown(GenerationSettings, gen, where, "generation.")
    data["generation"] = GenerationSettings(**gen)
    try:
        data["reward"] = RewardConfig.from_dict(data.get("reward"))
    except ValueError as e:
        raise T1Error(f"{where}: {e}") from None
    if "lora" in data and data["lora"] is not None:
        if not isinstance(data["lora"], dict):
            raise T1Error(f"{where}: lora must be a section of settings or null (full fine-tuning)")
        _reject_unknown(LoraSettings, data["lora"], where, "lora.")
        data["lora"] = LoraSettings(**data["lora"])
    if not isinstance(data.get("training") or {}, dict):
        raise T1Error(f"{where}: training must be a section of GRPOConfig settings")
    data["training"] = dict(data.get("training") or {})
    config = GRPOStageConfig(**data)
    config.validate()
    return config


def load_grpo_config(path: str | Path | None = None, overrides: list[str] | None = None) -> GRPOStageConfig:
    """YAML file plus `key=value` overrides: a top-level key, a nested one (`reward.k=5`,
    `training.beta=0.01`) or, as a shortcut, any GRPOConfig field (`max_steps=2`)."""
    from .config import _parse_overrides, read_settings

    data = read_settings(path)
    for key, value in _parse_overrides(overrides or []):
        _set(data, key, value)
    return grpo_config_from_dict(data, where=str(path or "config"))


def _set(data: dict, key: str, value) -> None:
    from .config import set_setting

    set_setting(data, key, value, {f.name for f in fields(GRPOStageConfig)}, {f.name for f in fields(GRPOConfig)},
                "stage-3 config key nor a GRPOConfig field")


def _reject_unknown(kind, data: dict, where: str, prefix: str) -> None:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise T1Error(f"{where}: unknown setting(s) {', '.join(prefix + u for u in unknown)}")


# ---------------------------------------------------------------------------- prompts
def fit_query(model, query: str, instruction: str | None, max_length: int) -> str:
    """The query text cut so its chat prompt fits `max_length` tokens, as text for TRL's
    conversational prompt."""
    try:
        return model.prompts.fit_query(query, instruction, max_length)
    except ValueError:
        raise T1Error(f"max_query_length={max_length} leaves no room for the query") from None


def conversation(query: str, instruction: str | None) -> list[dict]:
    """The user turn `PromptBuilder` renders; TRL applies the same chat template to it."""
    return PromptBuilder.messages(query, instruction)


# ---------------------------------------------------------------------------- embedding helpers
@contextmanager
def eval_mode(module: torch.nn.Module):
    """Eval mode inside (no dropout, no activation checkpointing); the previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class DocumentPool:
    """Document embeddings from the current model (no_grad), cached and dropped every
    `refresh_steps` optimizer steps: re-encoding every step is unaffordable, and a cache much
    older than that drifts from the model. Only documents a batch asks for are encoded, so the
    cost follows the batch, not the corpus."""

    def __init__(self, model, refresh_steps: int, max_length: int, batch_size: int = 16):
        self.model = model
        self.refresh_steps = max(1, int(refresh_steps))
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache: dict[tuple[str, str], torch.Tensor] = {}
        self.epoch: int | None = None
        self.refreshes = 0  # times the cache was dropped
        self.encoded = 0  # documents encoded so far

    def embed(self, docs: Sequence[tuple[str, str]], step: int) -> torch.Tensor:
        """[len(docs), dim] for (instruction, text) pairs at optimizer step `step`."""
        epoch = step // self.refresh_steps
        if epoch != self.epoch:
            self.refreshes += self.epoch is not None
            self.cache.clear()
            self.epoch = epoch
        missing = [d for d in dict.fromkeys(docs) if d not in self.cache]
        if missing:
            seqs = [self.model.prompts.document(text, instr, self.max_length) for instr, text in missing]
            with torch.no_grad(), eval_mode(self.model.backbone):
                emb = self.model.embed_sequences(seqs, self.batch_size)
            self.cache.update(zip(missing, emb.float().cpu()))
            self.encoded += len(missing)
        return torch.stack([self.cache[d] for d in docs])


# ---------------------------------------------------------------------------- reward
class RetrievalReward:
    """The TRL reward function: embeds each trace with the live model and scores it against
    the batch's candidate pool. It holds the model, so TRL need not pass it."""

    __name__ = "retrieval"  # TRL names the reward's metrics after it

    def __init__(self, model, records: list[Record], config: GRPOStageConfig):
        self.model = model
        self.records = records
        self.config = config
        self.pool = DocumentPool(model, config.doc_refresh_steps, config.max_document_length, config.embed_batch_size)
        self.stop_ids = {model.emb_token_id, model.tokenizer.eos_token_id}
        self._prompt_ids: dict[int, list[int]] = {}
        self.last: list = []  # TraceReward per row of the latest call, in TRL's order

    def query_instruction(self, record: Record) -> str:
        return self.model.config.query_instruction if record.instruction is None else record.instruction

    def document_instruction(self, record: Record) -> str:
        instr = record.document_instruction
        return self.model.config.document_instruction if instr is None else instr

    def prompt_ids(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            r = self.records[index]
            self._prompt_ids[index] = self.model.prompts.query_prompt(
                r.query, self.query_instruction(r), self.config.max_query_length)
        return self._prompt_ids[index]

    def split_trace(self, completion: Sequence[int]) -> tuple[list[int], bool]:
        """(trace without its stop token, whether the model emitted <emb_token> itself)."""
        completion = list(completion)
        if completion and completion[-1] in self.stop_ids:
            return completion[:-1], completion[-1] == self.model.emb_token_id
        return completion, False

    def candidate_pool(self, query_index: Sequence[int]) -> tuple[list[tuple[str, str]], np.ndarray]:
        """Documents of every query in the batch (positives + hard negatives), deduplicated, and
        a [rows, documents] mask of each row's positives."""
        docs: dict[tuple[str, str], None] = {}
        for i in dict.fromkeys(query_index):
            r = self.records[i]
            instr = self.document_instruction(r)
            docs.update(dict.fromkeys((instr, t) for t in r.pos + r.neg[: self.config.negatives_per_query]))
        docs_list = list(docs)
        col = {d: j for j, d in enumerate(docs_list)}
        positive = np.zeros((len(query_index), len(docs_list)), dtype=bool)
        for row, i in enumerate(query_index):
            r = self.records[i]
            positive[row, [col[(self.document_instruction(r), t)] for t in r.pos]] = True
        return docs_list, positive

    def __call__(self, prompts, completions, completion_ids, query_index, trainer_state=None,
                 log_metric=None, **_) -> list[float]:
        step = trainer_state.global_step if trainer_state is not None else 0
        query_index = [int(i) for i in query_index]
        split = [self.split_trace(c) for c in completion_ids]
        emb_id = self.model.emb_token_id
        seqs = [self.prompt_ids(i) + trace + [emb_id] for i, (trace, _) in zip(query_index, split)]
        docs, positive = self.candidate_pool(query_index)
        with torch.no_grad():
            with eval_mode(self.model.backbone):
                q = self.model.embed_sequences(seqs, self.config.embed_batch_size)
            d = self.pool.embed(docs, step).to(q.device)
            scores = (q.float() @ d.T).cpu().numpy()
        budget = self.config.generation.max_new_tokens
        self.last = [trace_reward(scores[row], positive[row], len(trace), emitted, budget, self.config.reward)
                     for row, (trace, emitted) in enumerate(split)]
        if log_metric is not None:
            for name, value in self._summaries(split, len(docs)).items():
                log_metric(name, value)
        return [r.total for r in self.last]

    def _summaries(self, split, pool_size: int) -> dict[str, float]:
        def mean(xs):
            return float(np.mean(xs))

        return {
            "t1/rank_term": mean([r.rank for r in self.last]),
            "t1/positive_rank": mean([r.best_rank for r in self.last]),
            "t1/margin": mean([r.margin for r in self.last]),
            "t1/emitted_emb_token": mean([r.format for r in self.last]),
            "t1/reasoning_length": mean([len(t) for t, _ in split]),
            "t1/pool_size": float(pool_size),
        }


# ---------------------------------------------------------------------------- trainer
class T1GRPOTrainer(GRPOTrainer):
    """GRPOTrainer plus the query index on each rollout row and the contrastive term. Reward
    and contrastive embeddings run the decoder directly (`T1Model.embed`), not through the
    DDP wrapper; the contrastive gradients join the policy loss's in the same backward pass."""

    def __init__(self, *args, t1_model, reward: RetrievalReward, stage: GRPOStageConfig, **kwargs):
        self.t1 = t1_model
        self.t1_reward = reward
        self.stage = stage
        self.groups = RecordDataset(reward.records, stage.negatives_per_query, seed=kwargs["args"].seed)
        self.last_advantages: torch.Tensor | None = None
        super().__init__(*args, reward_funcs=[reward], **kwargs)
        self.t1.backbone = self.model  # the PEFT-wrapped policy when TRL wrapped it

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["t1_query_index"] = torch.tensor([int(x["query_index"]) for x in inputs],
                                                device=self.accelerator.device)
        self.last_advantages = output["advantages"].detach().cpu()
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.stage.contrastive_weight > 0 and self.model.training:
            contrastive = self._contrastive_loss(inputs)
            self._metrics["train"]["contrastive_loss"].append(contrastive.item())
            loss = loss + self.stage.contrastive_weight * contrastive / self.current_gradient_accumulation_steps
        return loss

    def _contrastive_loss(self, inputs) -> torch.Tensor:
        """InfoNCE of each rollout row (prompt + its sampled trace) against one positive and
        `negatives_per_query` negatives of its query (drawn as in stages 1/2), with every other
        document of the global batch as a negative."""
        reward, emb_id = self.t1_reward, self.t1.emb_token_id
        seqs = []
        for p, pm, c, cm in zip(inputs["prompt_ids"], inputs["prompt_mask"],
                                inputs["completion_ids"], inputs["completion_mask"]):
            trace, _ = reward.split_trace(c[cm.bool()].tolist())
            seqs.append(p[pm.bool()].tolist() + trace + [emb_id])
        self.groups.epoch = self.state.global_step  # other negatives at every step
        items = [self.groups[i] for i in inputs["t1_query_index"].tolist()]
        docs = [(reward.document_instruction(it["record"]), t) for it in items for t in it["documents"]]
        unique = {d: j for j, d in enumerate(dict.fromkeys(docs))}  # embed each passage once
        doc_seqs = [self.t1.prompts.document(t, instr, self.stage.max_document_length) for instr, t in unique]
        q = self.t1.embed_sequences(seqs, self.stage.embed_batch_size)
        d = self.t1.embed_sequences(doc_seqs, self.stage.embed_batch_size)
        d = d[torch.tensor([unique[x] for x in docs], device=q.device)]
        width = self.groups.max_positives
        positive_keys = torch.full((len(items), width), -1, dtype=torch.long, device=q.device)
        for row, it in enumerate(items):
            positive_keys[row, : len(it["positive_keys"])] = torch.tensor(it["positive_keys"])
        doc_keys = torch.tensor([text_key(t) for _, t in docs], dtype=torch.long, device=q.device)
        loss, _ = info_nce(q, d, 1 + self.stage.negatives_per_query, self.stage.temperature, positive_keys, doc_keys)
        return loss


# ---------------------------------------------------------------------------- logging
HEADLINE = (("reward", "reward {:.3f}"), ("reward_std", "± {:.3f}"), ("t1/positive_rank", "pos rank {:.2f}"),
            ("t1/reasoning_length", "len {:.1f}"), ("kl", "kl {:.4f}"), ("loss", "loss {:.4f}"),
            ("contrastive_loss", "nce {:.3f}"))


class MetricsLogger(TrainerCallback):
    """One line per logged step on stdout, the full dict to metrics.jsonl and TensorBoard."""

    def __init__(self, output_dir: Path, stream=None):
        self.path = Path(output_dir) / METRICS_FILE
        self.tb_dir = Path(output_dir) / "tensorboard"
        self.stream = stream or sys.stdout
        self.writer = None
        self.start = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            _truncate_log(self.path, state.global_step)  # drop steps after the checkpoint we resume from
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.tb_dir))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if _is_number(v)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, state.global_step)
            self.writer.flush()
        if "reward" in row:
            parts = [fmt.format(row[key]) for key, fmt in HEADLINE if key in row]
            print(f"step {state.global_step}/{state.max_steps} | " + " | ".join(parts)
                  + f" | {time.time() - self.start:.0f}s", file=self.stream, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with atomic_open(path) as f:
        for row in rows:
            if row.get("step", 0) <= step:
                f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------- entry point
def grpo_arguments(stage: GRPOStageConfig):
    """TRL's GRPOConfig: our generation settings, defaults for one GPU (or CPU), then the
    `training:` section on top."""
    gen = stage.generation
    cuda = torch.cuda.is_available()
    values = dict(
        output_dir=stage.output_dir, num_generations=gen.num_generations, max_completion_length=gen.max_new_tokens,
        temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
        per_device_train_batch_size=2 * gen.num_generations, learning_rate=1e-6, beta=0.0,
        max_steps=100, save_steps=25, save_total_limit=2, logging_steps=1,
        bf16=cuda, report_to=[], disable_tqdm=True,
    )
    values.update(stage.training)
    values.update(output_dir=stage.output_dir, remove_unused_columns=False)  # the reward needs query_index
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            return GRPOConfig(**values)
        except (TypeError, ValueError) as e:
            raise T1Error(f"stage-3 training settings: {e}") from None


def build_policy(stage: GRPOStageConfig, device=None):
    """The starting model, made trainable as in stages 1/2 (`trainer.build_model`): a saved
    LoRA model keeps training its adapter, a base model gets a fresh one, `lora: null` trains
    full weights. With vLLM, which loads the starting weights from disk, a LoRA folder is first
    merged into `<output_dir>/start` (full weights) and a fresh adapter trains on top."""
    from ..model import T1Model
    from .trainer import build_model

    folder = Path(stage.model)
    if stage.training.get("use_vllm") and (folder / "adapter_config.json").exists():
        start = Path(stage.output_dir) / "start"
        with PartialState().main_process_first():
            if not (start / "t1_config.json").exists():
                merged = T1Model.from_pretrained(str(folder), device="cpu")
                merged.backbone = merged.backbone.merge_and_unload()
                merged.save_pretrained(start)
        folder = start
        stage = replace(stage, model=str(start))
    model = build_model(stage, device=device)
    if stage.lora is not None and (folder / "t1_config.json").exists() and not (folder / "adapter_config.json").exists():
        model.config.backbone = str(folder)  # the new adapter applies to these full weights
    return model


def _prepare_policy(model, output_dir: Path, beta: float) -> None:
    """Make <emb_token> a stop token for TRL's generation and, for a full-weights KL run, point
    TRL at a folder holding the starting weights: it loads the reference from the policy's
    config path, which lacks the <emb_token> row when the token was added in memory."""
    gen = model.backbone.generation_config
    eos = gen.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    gen.eos_token_id = list(dict.fromkeys(eos + [model.tokenizer.eos_token_id, model.emb_token_id]))
    head = model.backbone.get_output_embeddings()
    if head is not None and not hasattr(head, "bias"):
        # peft's TrainableTokensWrapper (the <emb_token> row of a tied LM head) exposes `weight`
        # but not `bias`, which TRL's fused log-prob head reads. Plain attribute: no new parameter.
        object.__setattr__(head, "bias", getattr(getattr(head, "original_module", None), "bias", None))
    if not beta or hasattr(model.backbone, "peft_config"):
        return  # no reference, or TRL's reference is the adapter's starting copy
    source = Path(getattr(model, "name_or_path", "") or "")
    if (source / "t1_config.json").exists() and not (source / "adapter_config.json").exists():
        reference = source
    else:
        reference = output_dir / "reference"
        with PartialState().main_process_first():
            if not (reference / "config.json").exists():
                model.backbone.save_pretrained(reference)
                model.tokenizer.save_pretrained(reference)
    model.backbone.config._name_or_path = str(reference)


def train_grpo(stage: GRPOStageConfig, callbacks: list | None = None, model=None, stream=None):
    """Run stage 3; return (folder of the final T1 model, trainer). Resumes from the newest
    checkpoint in output_dir when `stage.resume` is true (the default)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .trainer import resolve_resume

    stream = stream or sys.stdout
    output_dir = Path(stage.output_dir)
    records = read_records(stage.train_file)[: stage.max_queries or None]
    args = grpo_arguments(stage)  # checks the settings before the model loads
    if model is None:
        model = build_policy(stage, device=args.device)  # this process's device, not cuda:0 for all
    _prepare_policy(model, output_dir, args.beta)
    if args.use_vllm:  # vLLM stops on its own list, not on the model's generation_config
        args.generation_kwargs = {"stop_token_ids": [model.emb_token_id], **(args.generation_kwargs or {})}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "stage3_config.json", stage.to_dict())

    reward = RetrievalReward(model, records, stage)
    rows = []
    for i, r in enumerate(records):
        instruction = reward.query_instruction(r)
        query = fit_query(model, r.query, instruction, stage.max_query_length)
        rows.append({"prompt": conversation(query, instruction), "query_index": i})
    trainer = T1GRPOTrainer(
        model=model.backbone, args=args, train_dataset=Dataset.from_list(rows), processing_class=model.tokenizer,
        callbacks=[MetricsLogger(output_dir, stream), CheckpointConfig(model), *(callbacks or [])],
        t1_model=model, reward=reward, stage=stage,
    )
    trainer.remove_callback(PrinterCallback)  # MetricsLogger prints one line per step instead
    trainer.remove_callback(ProgressCallback)
    checkpoint = resolve_resume(stage)
    if checkpoint:
        print(f"resuming stage 3 from {checkpoint}", file=stream, flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*")
        trainer.train(resume_from_checkpoint=checkpoint)
    final = output_dir / FINAL_DIR
    if trainer.state.global_step >= trainer.state.max_steps:
        save_policy(trainer, model, final)
    return final, trainer


def save_policy(trainer, model, folder: Path) -> None:
    """Save a T1 folder `T1Model.from_pretrained` loads (full weights, or the trained adapter
    without the frozen reference copy TRL adds for the KL term) and plot the reward curve.
    `trainer.save_model` gathers sharded weights and writes on the main process only."""
    backbone = trainer.model
    if hasattr(backbone, "peft_config") and "ref" in backbone.peft_config:
        backbone.delete_adapter("ref")
    trainer.save_model(str(folder))
    if trainer.is_world_process_zero():
        model.config.save(folder)
        output_dir = Path(trainer.args.output_dir)
        if any("reward" in row for row in read_metrics(output_dir)):
            plot_rewards(output_dir / METRICS_FILE, output_dir / "reward_curve.png")


class CheckpointConfig(TrainerCallback):
    """Writes t1_config.json into each checkpoint, so a checkpoint loads with T1Model."""

    def __init__(self, model):
        self.model = model

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            self.model.config.save(folder)
