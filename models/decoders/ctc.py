"""CTC head (NeMo ``ConvASRDecoder``): pointwise conv to ``V + 1`` classes, blank last, log-softmax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from models.errors import CheckpointError


def flatten_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a module config: ``{_target_, **kwargs}`` or legacy ``{cls, params}``."""
    if isinstance(cfg.get("params"), Mapping):
        return dict(cfg["params"])
    return {k: v for k, v in cfg.items() if k not in ("_target_", "cls")}


class CTCHead(nn.Module):
    """``forward(enc [B, D, T]) -> log_probs [B, T, V + 1]``; keys ``decoder_layers.0.{weight,bias}``."""

    def __init__(self, feat_in: int, num_classes: int, add_blank: bool = True) -> None:
        super().__init__()
        self.num_classes_with_blank = num_classes + 1 if add_blank else num_classes
        self.decoder_layers = nn.Sequential(nn.Conv1d(feat_in, self.num_classes_with_blank, kernel_size=1))
        # set from the decoding config by the model layer; 1.0 leaves the logits untouched
        self.temperature = 1.0

    @property
    def blank_idx(self) -> int:
        return self.num_classes_with_blank - 1

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> CTCHead:
        c = flatten_cfg(cfg)
        num_classes = int(c.get("num_classes", -1))
        vocabulary = c.get("vocabulary")
        if num_classes <= 0:
            if not vocabulary:
                raise CheckpointError("CTC head config needs num_classes > 0 or a vocabulary")
            num_classes = len(vocabulary)
        return cls(int(c["feat_in"]), num_classes, add_blank=bool(c.get("add_blank", True)))

    def forward(self, enc: Tensor) -> Tensor:
        if enc.shape[-1] == 0:  # too short for one encoder frame: Conv1d refuses empty input
            return enc.new_zeros(enc.shape[0], 0, self.decoder_layers[0].out_channels)  # [B, 0, V + 1]
        logits = self.decoder_layers(enc).transpose(1, 2)  # [B, T, V + 1]
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return torch.log_softmax(logits, dim=-1)
