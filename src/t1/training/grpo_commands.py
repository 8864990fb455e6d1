"""`t1 train grpo` (stage 3) and `t1 train curriculum` (stages 1 → 2 → 3 with a dev evaluation
after each). `register_grpo(train_subparsers)` adds them to the `t1 train` group:

    t1 train grpo --config configs/stage3-smollm2-cpu.yaml [key=value ...]
    t1 train curriculum --config configs/curriculum-smollm2.yaml [key=value ...]
    accelerate launch --num_processes 8 -m t1.training train grpo --config configs/stage3-qwen3-4b-8gpu.yaml
"""

from __future__ import annotations

import argparse

from ..errors import T1Error

GRPO_OVERRIDES = ("settings that replace the config's: key=value (a config key, reward.k=5, generation.temperature=0.8, "
                  "training.beta=0.01, or any GRPOConfig field such as max_steps=2); --key value works too")
CURRICULUM_OVERRIDES = ("settings that replace the curriculum config's: key=value (eval.max_queries=20, "
                        "stage3.max_steps=5: a stage prefix passes the rest on to that stage's config)")


def register_grpo(train_subparsers) -> None:
    p = train_subparsers.add_parser(
        "grpo", help="stage 3: GRPO on sampled reasoning traces, rewarded by retrieval",
        description="Stage 3: for each query sample G reasoning traces, reward each by how well its embedding "
                    "ranks the positives in the batch's pool, and train by group-relative policy optimisation "
                    "(TRL's GRPOTrainer). Re-running the same command resumes from the newest checkpoint.")
    p.add_argument("--config", help="YAML config (see configs/stage3-*.yaml)")
    p.add_argument("--plot", metavar="PNG", help="only plot the reward curve of the run's metrics.jsonl to PNG")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help=GRPO_OVERRIDES)
    p.set_defaults(func=_grpo)

    p = train_subparsers.add_parser(
        "curriculum", help="stages 1 → 2 → 3, evaluated on a dev split after each, into one table",
        description="Mine records, train stage 1 (contrastive), write traces, train stage 2 (reasoning SFT), "
                    "train stage 3 (GRPO), evaluating on the dev split after each stage. Resumable: finished "
                    "stages and evaluations are kept.")
    p.add_argument("--config", help="YAML config (see configs/curriculum-smollm2.yaml)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help=CURRICULUM_OVERRIDES)
    p.set_defaults(func=_curriculum)


def _split_config(args, *options: str) -> tuple[str | None, list[str]]:
    """argparse's REMAINDER swallows options given after the first override: take them back
    (`--config`, and any of `options`, stored on `args`)."""
    overrides = list(args.overrides or [])
    for option in ("--config", *options):
        if option in overrides:
            i = overrides.index(option)
            if i + 1 >= len(overrides):
                raise T1Error(f"{option} needs a value")
            setattr(args, option[2:], overrides[i + 1])
            del overrides[i: i + 2]
    return args.config, overrides


def _grpo(args) -> int:
    from .grpo import load_grpo_config, train_grpo
    from .reward_curve import plot_rewards

    config_path, overrides = _split_config(args, "--plot")
    config = load_grpo_config(config_path, overrides)
    if args.plot:
        print(f"wrote {plot_rewards(config.output_dir, args.plot)}")
        return 0
    final, trainer = train_grpo(config)
    if trainer.state.global_step < trainer.state.max_steps:
        print(f"stopped at step {trainer.state.global_step}; re-run the same command to resume")
        return 1
    print(f"saved the trained model to {final}")
    return 0


def _curriculum(args) -> int:
    from .curriculum import load_curriculum_config, run_curriculum

    config_path, overrides = _split_config(args)
    table = run_curriculum(load_curriculum_config(config_path, overrides))
    print(table)
    return 0
