"""BRIGHT's task table and its query instructions: low in the package, so that the model (a
BRIGHT task is a `prompt_name`) and the evaluation both use it without the model importing the
evaluation package.
"""

from __future__ import annotations

from .errors import T1Error

BRIGHT_TASKS = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems",
)
STACKEXCHANGE = BRIGHT_TASKS[:7]
BRIGHT_LONG_TASKS = STACKEXCHANGE + ("pony",)  # the tasks with long documents


def bright_instruction(task: str, long: bool = False) -> str:
    """The query instruction of BRIGHT's own configs for its LLM embedders (configs/qwen, qwen2,
    sf and e5: `instructions`, or `instructions_long` for long documents), with `{task}` filled
    by the task key as BRIGHT's code fills it and without the "Instruct: ... Query: " wrapper.
    tests/fixtures/bright_instructions.json keeps BRIGHT's strings to check these against."""
    unit = "documents" if long else "passages"
    if task in STACKEXCHANGE:
        return f"Given a {task} post, retrieve relevant {unit} that help answer the post"
    if task == "pony":
        return f"Given a {task} question, retrieve relevant {unit} that help answer the question"
    if task == "leetcode":
        return "Given a coding problem, retrieve relevant examples that help answer the problem"
    if task in ("aops", "theoremqa_questions"):
        return "Given a Math problem, retrieve relevant examples that help answer the problem"
    if task == "theoremqa_theorems":
        return "Given a Math problem, retrieve relevant theorems that help answer the problem"
    raise T1Error(f"unknown BRIGHT task {task!r} (expected one of {', '.join(BRIGHT_TASKS)})")
