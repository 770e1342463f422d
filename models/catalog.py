"""The pretrained-model catalog behind ``list_available_models()`` and name resolution.

The data (``models/catalog.json``) is generated from NeMo itself by ``tools/make_catalog.py``: NeMo's NGC
names plus the Hugging Face checkpoints of NeMo's model tables. Catalog names and aliases match exactly,
as in NeMo; near misses only feed the suggestions of ``UnknownModelError``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

HF_PREFIX = "https://huggingface.co/"


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog record. Light: reading the catalog imports no model code."""

    pretrained_model_name: str
    description: str
    location: str
    class_name: str  # NeMo's class name, e.g. ``EncDecRNNTBPEModel``
    aliases: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    @property
    def hf_repo_id(self) -> str | None:
        """The Hugging Face repo id when the checkpoint lives on the Hub, else ``None`` (NGC)."""
        return self.location[len(HF_PREFIX):].strip("/") if self.location.startswith(HF_PREFIX) else None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.pretrained_model_name, *self.aliases)


@dataclass(frozen=True)
class PretrainedModelInfo:
    """NeMo's ``PretrainedModelInfo`` fields, plus the NeMo class name and languages from the catalog.

    ``class_`` is the runtime class when aviary implements the checkpoint's class, else ``None``
    (``class_name`` always holds NeMo's class name).
    """

    pretrained_model_name: str
    description: str
    location: str
    class_: Any = None
    aliases: tuple[str, ...] = ()
    class_name: str = ""
    languages: tuple[str, ...] = ()


def _runtime_class(class_name: str) -> type | None:
    """aviary's class of that NeMo name, or ``None`` when the runtime does not implement it."""
    from models.errors import CheckpointError
    from models.families import model_class_for

    try:
        return model_class_for(f"nemo.collections.asr.models.{class_name}")
    except CheckpointError:
        return None


@lru_cache(maxsize=1)
def entries() -> tuple[CatalogEntry, ...]:
    """Every catalog entry, in the catalog's order."""
    text = resources.files("models").joinpath("catalog.json").read_text(encoding="utf-8")
    return tuple(
        CatalogEntry(
            pretrained_model_name=e["pretrained_model_name"],
            description=e["description"],
            location=e["location"],
            class_name=e["class_name"],
            aliases=tuple(e.get("aliases", ())),
            languages=tuple(e.get("languages", ())),
        )
        for e in json.loads(text)["models"]
    )


def list_available_models(cls: type | None = None) -> list[PretrainedModelInfo]:
    """Catalog entries usable by ``cls``: its own class or a subclass of it.

    ``ASRModel`` (or ``None``) gets the whole catalog, as NeMo's subclass walk does, including entries whose
    class aviary does not implement yet (loading those raises ``CheckpointError``).
    """
    from models.asr_model import ASRModel

    infos = [
        PretrainedModelInfo(e.pretrained_model_name, e.description, e.location, _runtime_class(e.class_name),
                            e.aliases, e.class_name, e.languages)
        for e in entries()
    ]
    if cls is None or cls is ASRModel:
        return infos
    return [m for m in infos if m.class_ is not None and issubclass(m.class_, cls)]


def find(name: str) -> CatalogEntry | None:
    """The entry whose name or alias is exactly ``name``."""
    for entry in entries():
        if name in entry.names:
            return entry
    return None


def closest_names(name: str, n: int = 3) -> tuple[str, ...]:
    """Up to ``n`` catalog names close to ``name``, one per entry, case-insensitive exact matches first.

    An entry is named the way the query is written: by its ``org/name`` alias for a repo-id-like query.
    """
    owner = {alias.lower(): entry for entry in entries() for alias in entry.names}
    ranked = [k for k in owner if k == name.lower()]
    ranked += difflib.get_close_matches(name.lower(), list(owner), n=3 * n, cutoff=0.6)
    picked: dict[str, str] = {}
    for key in ranked:
        entry = owner[key]
        repo_style = [a for a in entry.names if "/" in a]
        picked.setdefault(entry.pretrained_model_name,
                          repo_style[0] if "/" in name and repo_style else entry.pretrained_model_name)
    return tuple(picked.values())[:n]
