"""Stage 3: GRPO on reasoning traces, rewarded by how well each trace's embedding retrieves.

For each training query the policy samples G traces; `grpo_reward.RetrievalReward` scores each
one. Group-normalised advantages, the clipped surrogate, the optional KL to the reference and
vLLM rollouts are TRL's GRPOTrainer: a TRL reward function is any callable, so ours is an
object holding the live model. The subclass adds only what TRL lacks: the query index on each
rollout row, the optional contrastive term in the loss, and T1's settings next to each
checkpoint. Configuration: `grpo_config.T1GRPOConfig` and `model_config.ModelArguments`. Given
an `evaluator` (a `RetrievalEvaluator`), `evaluate()` runs it on the live model.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import TrainerCallback
from trl import GRPOTrainer

from ..atomic import write_json
from ..backbones import has_adapter, saved_adapter
from ..errors import T1Error
from ..prompts import PromptBuilder
from ..reasoning import stop_token_ids
from .collator import RecordDataset, text_key
from .config_parser import to_dict
from .evaluate_hook import EvaluatorMixin
from .grpo_config import T1GRPOConfig
from .grpo_reward import RetrievalReward
from .losses import info_nce
from .model_config import ModelArguments
from .modeling import build_model, merged_start, resolve_resume
from .records import read_records
from .reward_curve import METRICS_FILE, MetricsLogger, plot_rewards, read_metrics

logger = logging.getLogger(__name__)

FINAL_DIR = "final"


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


# ---------------------------------------------------------------------------- trainer
class T1GRPOTrainer(EvaluatorMixin, GRPOTrainer):
    """GRPOTrainer plus the query index on each rollout row and the contrastive term. Reward
    and contrastive embeddings run the decoder directly (`T1Model.embed`), not through the
    DDP wrapper; the contrastive gradients join the policy loss's in the same backward pass."""

    def __init__(self, *args, t1_model, reward: RetrievalReward, **kwargs):
        self.t1 = t1_model
        self.t1_reward = reward
        self.groups = RecordDataset(reward.records, kwargs["args"].negatives_per_query, seed=kwargs["args"].seed)
        self.last_advantages: torch.Tensor | None = None
        super().__init__(*args, reward_funcs=[reward], **kwargs)
        self.t1.backbone = self.model  # the PEFT-wrapped policy when TRL wrapped it

    @property
    def t1_model(self):
        return self.t1

    def _get_train_sampler(self, dataset=None):
        return EpochSeededSampler(super()._get_train_sampler(dataset))

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["t1_query_index"] = torch.tensor([int(x["query_index"]) for x in inputs],
                                                device=self.accelerator.device)
        self.last_advantages = output["advantages"].detach().cpu()
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.args.contrastive_weight > 0 and self.model.training:
            contrastive = self._contrastive_loss(inputs)
            self._metrics["train"]["contrastive_loss"].append(contrastive.item())
            loss = loss + self.args.contrastive_weight * contrastive / self.current_gradient_accumulation_steps
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
        doc_seqs = [self.t1.prompts.document(t, instr, self.args.max_document_length) for instr, t in unique]
        q = self.t1.embed_sequences(seqs, self.args.embed_batch_size)
        d = self.t1.embed_sequences(doc_seqs, self.args.embed_batch_size)
        d = d[torch.tensor([unique[x] for x in docs], device=q.device)]
        width = self.groups.max_positives
        positive_keys = torch.full((len(items), width), -1, dtype=torch.long, device=q.device)
        for row, it in enumerate(items):
            positive_keys[row, : len(it["positive_keys"])] = torch.tensor(it["positive_keys"])
        doc_keys = torch.tensor([text_key(t) for _, t in docs], dtype=torch.long, device=q.device)
        loss, _ = info_nce(q, d, 1 + self.args.negatives_per_query, self.args.contrastive_temperature, positive_keys, doc_keys)
        return loss


class EpochSeededSampler(torch.utils.data.Sampler):
    """TRL's prompt sampler with its shuffle seeded by (seed, epoch). TRL's draws each epoch's
    order from one generator, so a run resumed in a later epoch would replay epoch 0's order;
    the Trainer calls `set_epoch`, which makes every epoch's order its own."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self):
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        if getattr(self.sampler, "seed", None) is not None:
            self.sampler.generator.manual_seed(self.sampler.seed + epoch)


# ---------------------------------------------------------------------------- entry point
def build_policy(model_args: ModelArguments, args: T1GRPOConfig):
    """The starting model, made trainable as in stages 1/2. With vLLM, which loads the starting
    weights from disk, a LoRA folder is first merged into `<output_dir>/start`."""
    if args.use_vllm:
        model_args = merged_start(model_args, args.output_dir)
    return build_model(model_args, device=args.device, seed=args.seed)  # this process's device, not cuda:0 for all


def _prepare_policy(model, output_dir: Path, beta: float) -> None:
    """Make <emb_token> a stop token for TRL's generation and, for a full-weights KL run, point
    TRL at a folder holding the starting weights: it loads the reference from the policy's
    config path, which lacks the <emb_token> row when the token was added in memory."""
    model.backbone.generation_config.eos_token_id = stop_token_ids(model)
    head = model.backbone.get_output_embeddings()
    if head is not None and not hasattr(head, "bias"):
        # peft's TrainableTokensWrapper (the <emb_token> row of a tied LM head) exposes `weight`
        # but not `bias`, which TRL's fused log-prob head reads. Plain attribute: no new parameter.
        object.__setattr__(head, "bias", getattr(getattr(head, "original_module", None), "bias", None))
    if not beta or has_adapter(model.backbone):
        return  # no reference, or TRL's reference is the adapter's starting copy
    source = Path(getattr(model, "name_or_path", "") or "")
    if (source / "t1_config.json").exists() and not saved_adapter(source):
        reference = source
    else:
        reference = output_dir / "reference"
        with PartialState().main_process_first():
            if not (reference / "config.json").exists():
                model.backbone.save_pretrained(reference)
                model.tokenizer.save_pretrained(reference)
    model.backbone.config._name_or_path = str(reference)


def train_grpo(model_args: ModelArguments, args: T1GRPOConfig, callbacks: list | None = None, model=None,
               stream=None, evaluator=None):
    """Run stage 3; return (folder of the final T1 model, trainer). Resumes from the newest
    checkpoint in output_dir (or `resume_from_checkpoint`). `evaluator` (a `RetrievalEvaluator`)
    is what `eval_strategy` runs during training."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    stream = stream or sys.stdout
    output_dir = Path(args.output_dir)
    records = read_records(args.train_file)[: args.max_queries or None]
    checkpoint = resolve_resume(output_dir, args.resume_from_checkpoint)
    if model is None:
        model = build_policy(model_args, args)
    _prepare_policy(model, output_dir, args.beta)
    if args.use_vllm:  # vLLM stops on its own list, not on the model's generation_config
        args.generation_kwargs = {"stop_token_ids": stop_token_ids(model), **(args.generation_kwargs or {})}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "stage3_config.json", to_dict(model_args, args))

    reward = RetrievalReward(model, records, args)
    rows = []
    for i, r in enumerate(records):
        instruction = reward.query_instruction(r)
        query = fit_query(model, r.query, instruction, args.max_query_length)
        rows.append({"prompt": conversation(query, instruction), "query_index": i})
    trainer = T1GRPOTrainer(
        model=model.backbone, args=args, train_dataset=Dataset.from_list(rows), processing_class=model.tokenizer,
        callbacks=[MetricsLogger(output_dir, stream), CheckpointConfig(model), SeedEachStep(), *(callbacks or [])],
        t1_model=model, reward=reward, evaluator=evaluator,
    )
    trainer.remove_callback(PrinterCallback)  # MetricsLogger prints one line per step instead
    trainer.remove_callback(ProgressCallback)
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
    if has_adapter(backbone) and "ref" in backbone.peft_config:
        backbone.delete_adapter("ref")
    trainer.save_model(str(folder))
    if trainer.is_world_process_zero():
        model.config.save(folder)
        output_dir = Path(trainer.args.output_dir)
        if any("reward" in row for row in read_metrics(output_dir)):
            plot_rewards(output_dir / METRICS_FILE, output_dir / "reward_curve.png")


class SeedEachStep(TrainerCallback):
    """Seeds the random generators from (seed, step, rank) before each step, so the traces a
    step samples do not depend on what ran before it in this process: a run resumed from a
    checkpoint samples what the uninterrupted run did (the Trainer's restored RNG state does not
    give that: building the resumed data loader draws from it)."""

    def on_step_begin(self, args, state, control, **kwargs):
        from transformers import set_seed

        set_seed(args.seed + 1_000_003 * state.global_step + args.process_index)


class CheckpointConfig(TrainerCallback):
    """Writes t1_config.json into each checkpoint, so a checkpoint loads with T1Model."""

    def __init__(self, model):
        self.model = model

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            self.model.config.save(folder)
