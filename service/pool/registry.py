"""Which models exist: a models directory, explicit ``name=location`` entries, and the pretrained catalog.

The registry only names models and where they live (a local file, or a hub name to download); fetching and
loading them is the pool's job. ``describe`` peeks into an uncompressed ``.nemo`` archive's
``model_config.yaml`` so ``GET /models`` can show a model's architecture before it is ever loaded.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from service.errors import ConfigurationError, ModelNotFound
from service.settings import Settings

log = logging.getLogger("aviary.registry")

Source = Literal["bundled", "directory", "explicit", "pretrained"]
Hub = Literal["hf", "ngc"]
_LISTED_NAMES = 20  # past this many models, "not available" errors suggest names instead of listing them all


@dataclass(frozen=True)
class ModelSpec:
    """A model that can be loaded: its name, where it was declared, and where its checkpoint is.

    ``location`` is a local path when ``hub`` is None, else the name the hub client resolves (a catalog
    name or ``org/name``, optionally ``@revision``), downloaded on first use.
    """

    name: str
    source: Source
    location: str
    hub: Hub | None = None


class Catalog(Protocol):
    """Models known by name beyond the configured ones (the pretrained catalog, ``service/pool/catalog.py``)."""

    def specs(self) -> list[ModelSpec]:
        """Every entry, by its canonical name."""
        ...

    def find(self, name: str) -> ModelSpec | None:
        """The entry whose name or alias is ``name``."""
        ...

    def suggest(self, name: str) -> tuple[str, ...]:
        """Entry names close to ``name`` (for "did you mean")."""
        ...

    def details(self, name: str) -> dict[str, Any]:
        """What the catalog says about an entry: description, architecture, languages."""
        ...


class ModelRegistry:
    """The available models and the default one.

    Raises:
        ConfigurationError: the default model is not among the available ones.
    """

    def __init__(self, specs: Iterable[ModelSpec], default: str | None = None, catalog: Catalog | None = None):
        self.catalog = catalog
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self._specs[spec.name] = spec  # later declarations win (explicit entries override the directory)
        if default is not None and default not in self._specs:
            raise ConfigurationError(
                f"AVIARY_DEFAULT_MODEL={default!r} is not an available model ({self._listing(default)})"
            )
        configured = (name for name, spec in self._specs.items() if spec.source != "pretrained")
        self.default = default if default is not None else next(configured, None)

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog | None = None) -> ModelRegistry:
        """Build from the catalog, the bundled demo model, ``model_dir`` and ``models`` (later ones override
        same-named earlier ones); the default is the first explicit entry, else the alphabetically first
        directory model, else the bundled ``aviary-demo-en``, unless ``default_model`` says otherwise. Catalog
        entries are never the default unless named so."""
        from models.bundled import bundled_models  # no torch: a path lookup

        explicit = [explicit_spec(name, location) for name, location in settings.models.items()]
        found = _scan_directory(settings.model_dir) if settings.model_dir else []
        pretrained = catalog.specs() if catalog else []
        bundled = [ModelSpec(n, "bundled", str(p)) for n, p in bundled_models().items()] if settings.demo_model else []
        first = next(iter([*explicit, *found, *bundled]), None)
        default = settings.default_model or (first.name if first else None)
        registry = cls([*pretrained, *bundled, *found, *explicit], default, catalog)
        for name in settings.preload:
            registry.get(name, error=ConfigurationError)
        return registry

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def get(self, name: str, error: type[Exception] = ModelNotFound) -> ModelSpec:
        """The spec called ``name`` (a catalog alias such as ``nvidia/parakeet-tdt-0.6b-v2`` included).

        Raises:
            ModelNotFound: (or ``error``) no such model; the message lists the closest names.
        """
        spec = self._specs.get(name)
        if spec is None and self.catalog is not None and (entry := self.catalog.find(name)) is not None:
            spec = self._specs.get(entry.name)
        if spec is not None:
            return spec
        message = f"model '{name}' is not available; {self._listing(name)}"
        raise error(message, param="model") if error is ModelNotFound else error(message)

    def resolve(self, name: str | None) -> ModelSpec:
        """The named model, or the default one when ``name`` is None or empty."""
        if name:
            return self.get(name)
        if self.default is None:
            raise ModelNotFound(
                "no model is configured: set AVIARY_MODEL_DIR to a directory of .nemo files or "
                "AVIARY_MODELS to name=path pairs, or name a catalog model (GET /models)", param="model",
            )
        return self._specs[self.default]

    def suggestions(self, name: str) -> list[str]:
        """Available names close to ``name``: configured ones first, then catalog entries."""
        close = difflib.get_close_matches(name, list(self._specs), n=3, cutoff=0.6)
        from_catalog = self.catalog.suggest(name) if self.catalog is not None else ()
        return list(dict.fromkeys([*close, *from_catalog]))[:5]

    def _listing(self, name: str) -> str:
        configured = sorted(n for n, spec in self._specs.items() if spec.source != "pretrained")
        pretrained = len(self._specs) - len(configured)
        hint = self.suggestions(name) if pretrained or len(configured) > _LISTED_NAMES else []
        parts = [f"did you mean: {', '.join(hint)}?"] if hint else []
        if not configured:
            parts.append("no models are configured (AVIARY_MODEL_DIR, AVIARY_MODELS)")
        elif len(configured) <= _LISTED_NAMES:
            parts.append(f"available models: {', '.join(configured)}")
        if pretrained:
            parts.append(f"GET /models lists them and {pretrained} pretrained catalog models")
        elif len(configured) > _LISTED_NAMES:
            parts.append("GET /models lists them")
        return "; ".join(parts)


def _scan_directory(directory: Path) -> list[ModelSpec]:
    if not directory.is_dir():
        raise ConfigurationError(f"AVIARY_MODEL_DIR={str(directory)!r} is not a directory")
    files = sorted(p for p in directory.glob("*.nemo") if p.is_file())
    return [ModelSpec(p.stem, "directory", str(p.resolve())) for p in files]


def explicit_spec(name: str, location: str) -> ModelSpec:
    """An ``AVIARY_MODELS`` entry: an existing local file, else a hub name the runtime recognises (checked
    without the network; the download happens on first use).

    Raises:
        ConfigurationError: a path with no file, or a name that is neither a catalog name nor ``org/name``.
    """
    from models import hub  # the runtime's name resolution; no network access here
    from models.errors import CheckpointError, UnknownModelError

    path = Path(location).expanduser()
    if path.exists():
        return ModelSpec(name, "explicit", str(path.resolve()))
    try:
        ref = hub.parse_name(location)
    except CheckpointError:
        raise ConfigurationError(f"AVIARY_MODELS entry {name}={location}: no such file") from None
    except UnknownModelError as exc:
        hint = f"; did you mean: {', '.join(exc.suggestions)}?" if exc.suggestions else ""
        raise ConfigurationError(
            f"AVIARY_MODELS entry {name}={location}: no such file, and not a catalog name or a Hugging Face "
            f"repo id (org/name){hint}"
        ) from None
    if ref.source == "local":  # parse_name found a file after all (a race with its creation)
        return ModelSpec(name, "explicit", str(Path(location).expanduser().resolve()))
    return ModelSpec(name, "explicit", location, hub=ref.source)


def describe(spec: ModelSpec) -> dict[str, Any]:
    """What can be known about a model without loading it (empty when the archive cannot be peeked, and for
    hub models, whose checkpoint may not even be downloaded)."""
    if spec.hub is not None:
        return {}
    try:
        stat = os.stat(spec.location)
    except OSError:
        return {}
    return dict(_peek(spec.location, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=256)
def _peek(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            header = fh.read(262)
        # Only plain tars: a gzip-compressed .nemo would have to be decompressed whole to reach its config.
        if header[257:262] != b"ustar":
            return {}
        with tarfile.open(path, "r:") as tar:
            member = next((m for m in tar if Path(m.name).name == "model_config.yaml" and m.isfile()), None)
            raw = tar.extractfile(member).read() if member else None  # type: ignore[union-attr]
        return _summarise(yaml.safe_load(raw)) if raw else {}
    except Exception as exc:  # noqa: BLE001 - a broken archive is reported when it is loaded
        log.debug("cannot peek into %s: %s", path, exc)
        return {}


def _summarise(cfg: dict[str, Any]) -> dict[str, Any]:
    """Architecture, decoders and sample rate as NeMo's config states them (the loaded model's info wins)."""
    target = str(cfg.get("target") or "")
    tdt = (cfg.get("loss") or {}).get("loss_name") == "tdt" or "tdt_durations" in (cfg.get("model_defaults") or {})
    transducer = "tdt" if tdt else "rnnt"
    decoders: list[str] | None = None
    if "MultiTask" in target:
        decoders = ["aed"]
    elif "Hybrid" in target:
        decoders = [transducer, "ctc"]
    elif "RNNT" in target:
        decoders = [transducer]
    elif "CTC" in target:
        decoders = ["ctc"]
    sample_rate = cfg.get("sample_rate") or (cfg.get("preprocessor") or {}).get("sample_rate")
    langs = (cfg.get("tokenizer") or {}).get("langs")
    return {
        "target": target or None,
        "decoders": decoders,
        "sample_rate": int(sample_rate) if isinstance(sample_rate, (int, float)) else None,
        "languages": sorted(langs) if isinstance(langs, dict) else None,
        "tasks": None if not target else ["asr", "ast"] if "MultiTask" in target else ["asr"],
    }
