"""Acoustic encoders: ``build_encoder(cfg)`` picks the class named by the config's ``_target_``/``cls``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from models.errors import CheckpointError


def config_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a module config: ``{_target_, **kwargs}`` or legacy ``{cls, params}``."""
    if "params" in cfg and isinstance(cfg.get("params"), Mapping):
        return dict(cfg["params"])
    return {k: v for k, v in cfg.items() if k not in ("_target_", "cls")}


def config_target(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("_target_") or cfg.get("cls") or "")


def build_encoder(cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate the encoder of a checkpoint config (weights are loaded by the caller)."""
    target = config_target(cfg).rsplit(".", 1)[-1]
    if target in ("ConformerEncoder", "ConformerEncoderAdapter"):
        from models.encoders.conformer import ConformerEncoder

        return ConformerEncoder.from_config(cfg)
    if target in ("ConvASREncoder", "ConvASREncoderAdapter"):
        from models.encoders.conv_asr import ConvASREncoder

        return ConvASREncoder.from_config(cfg)
    raise CheckpointError(f"unsupported encoder {config_target(cfg)!r}")
