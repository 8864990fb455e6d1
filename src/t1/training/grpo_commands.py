"""`t1 train grpo` (stage 3) and `t1 train curriculum` (stages 1 → 2 → 3 with a dev evaluation
after each). `register_grpo(train_subparsers)` adds them to the `t1 train` group:

    t1 train grpo --config configs/stage3-smollm2-cpu.yaml [--max_steps 2 --reward_k 5 ...]
    t1 train curriculum --config configs/curriculum-smollm2.yaml [--eval.max_queries 20 --stage3.max_steps 5]
    accelerate launch --num_processes 8 -m t1.training train grpo --config configs/stage3-qwen3-4b-8gpu.yaml
"""

from __future__ import annotations

from ..cli_args import add_config_command
from ..errors import T1Error


def register_grpo(train_subparsers) -> None:
    add_config_command(train_subparsers, "grpo",
                       "stage 3: GRPO on sampled reasoning traces, rewarded by retrieval (TRL's GRPOTrainer); "
                       "re-running resumes from the newest checkpoint; --plot PNG only plots the reward curve", _grpo)
    add_config_command(train_subparsers, "curriculum",
                       "stages 1 → 2 → 3, evaluated on a dev split after each, into one table (resumable); "
                       "--section.key value overrides the config, --stageN.field value a stage's", _curriculum)


def take_option(argv: list[str], option: str) -> str | None:
    """Remove `option VALUE` from `argv`; return VALUE (None when absent)."""
    if option not in argv:
        return None
    i = argv.index(option)
    if i + 1 >= len(argv):
        raise T1Error(f"{option} needs a value")
    value = argv[i + 1]
    del argv[i: i + 2]
    return value


def _grpo(args) -> int:
    from .arguments import ModelArguments, parse_config
    from .grpo import train_grpo
    from .grpo_config import T1GRPOConfig
    from .reward_curve import plot_rewards

    argv = list(args.argv)
    plot = take_option(argv, "--plot")
    model_args, config = parse_config((ModelArguments, T1GRPOConfig), argv, prog="t1 train grpo")
    if plot:
        print(f"wrote {plot_rewards(config.output_dir, plot)}")
        return 0
    final, trainer = train_grpo(model_args, config)
    if trainer.state.global_step < trainer.state.max_steps:
        print(f"stopped at step {trainer.state.global_step}; re-run the same command to resume")
        return 1
    print(f"saved the trained model to {final}")
    return 0


def _curriculum(args) -> int:
    from . import curriculum
    from .curriculum import load_curriculum_config, run_curriculum

    argv = list(args.argv)
    if "--help" in argv or "-h" in argv:
        print("usage: t1 train curriculum --config FILE [--section.key VALUE ...] [--stageN.field VALUE ...]\n")
        print(curriculum.__doc__)
        return 0
    config_path = take_option(argv, "--config")
    table = run_curriculum(load_curriculum_config(config_path, argv))
    print(table)
    return 0
