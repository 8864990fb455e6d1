"""Weight-only int8 (torchao) on a quantised copy of the weights: about a quarter of the bytes
read per decoding step. The copy does the whole rollout, trace and embedding, so the result is
close to the reference but not equal to it. The model's own weights stay fp32: documents are
embedded by them, and the index fingerprint does not change."""

from __future__ import annotations

import copy

from ..errors import T1Error
from .hf import HFEngine


class Int8Engine(HFEngine):
    name = "int8"
    exact = False

    def __init__(self, model):
        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise T1Error("engine int8 needs torchao: pip install 't1[int8]'") from None
        backbone = copy.deepcopy(model.backbone)
        quantize_(backbone, Int8WeightOnlyConfig())
        super().__init__(model, backbone.eval())
