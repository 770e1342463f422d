"""The pretrained-model catalog behind ``list_available_models()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PretrainedModelInfo:
    """NeMo's ``PretrainedModelInfo`` fields."""

    pretrained_model_name: str
    description: str
    location: str
    class_: Any = None
    aliases: tuple[str, ...] = ()


def list_available_models(cls: type | None = None) -> list[PretrainedModelInfo]:
    """Catalog entries usable by ``cls`` (empty until the hub catalog ships)."""
    return []
