"""The pretrained catalog as the registry sees it: NeMo's ``list_available_models`` entries, by name.

Only entries whose class the runtime implements are offered (a frame classifier, say, is not). Everything
here comes from the runtime's bundled catalog data: no network access, ever.
"""

from __future__ import annotations

import functools
from typing import Any

from service.pool.registry import ModelSpec

_NEMO_MODELS = "nemo.collections.asr.models."


class HubCatalog:
    """``models.catalog`` behind the registry's :class:`~service.pool.registry.Catalog` seam."""

    def specs(self) -> list[ModelSpec]:
        return [_spec(entry) for entry in _supported()]

    def find(self, name: str) -> ModelSpec | None:
        from models import catalog

        entry = catalog.find(name)
        if entry is None or entry.pretrained_model_name not in _supported_names():
            return None
        return _spec(entry)

    def suggest(self, name: str) -> tuple[str, ...]:
        from models import catalog

        return tuple(n for n in catalog.closest_names(name) if self.find(n) is not None)

    def details(self, name: str) -> dict[str, Any]:
        from models import catalog

        entry = catalog.find(name)
        if entry is None:
            return {}
        return {
            "description": entry.description, "target": _NEMO_MODELS + entry.class_name,
            "languages": list(entry.languages) or None, "aliases": list(entry.aliases),
        }


def _spec(entry: Any) -> ModelSpec:
    return ModelSpec(entry.pretrained_model_name, "pretrained", entry.pretrained_model_name,
                     hub="hf" if entry.hf_repo_id else "ngc")


@functools.lru_cache(maxsize=1)
def _supported() -> tuple[Any, ...]:
    """The catalog entries the runtime can load (computed once: it imports the runtime's model classes)."""
    from models import catalog

    usable = {info.pretrained_model_name for info in catalog.list_available_models() if info.class_ is not None}
    return tuple(entry for entry in catalog.entries() if entry.pretrained_model_name in usable)


@functools.lru_cache(maxsize=1)
def _supported_names() -> frozenset[str]:
    return frozenset(entry.pretrained_model_name for entry in _supported())
