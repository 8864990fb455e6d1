"""`t1 export`: a T1 model as a self-contained folder that `T1Model.from_pretrained` loads.

Adapter export keeps the LoRA adapter, the trained <emb_token> row, the tokenizer and
`t1_config.json` (whose `backbone` names the base weights the adapter applies to). Merged
export folds the adapter into the base weights and writes plain full weights: the folder needs
nothing else, so it can be pushed to a model hub as it is.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_folder
from .errors import T1Error


def export_model(source: str, out: str | Path, settings: dict | None = None, merged: bool = False,
                 overwrite: bool = False) -> Path:
    """Write `source` (a T1 folder, a shipped alias or a hub id) to `out`, with the T1 settings
    in `settings` changed (e.g. {"max_new_tokens": 64}). The folder appears whole or not at all;
    an existing one is replaced only with `overwrite`."""
    from .model import T1Model

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise T1Error(f"{out}: exists and is not empty (choose another folder)")
    model = T1Model.from_pretrained(source, device="cpu", merge_adapter=merged, **(settings or {}))
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
        for file in tmp.iterdir():
            file.chmod(0o644)
    return out
