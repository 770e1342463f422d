"""Which models exist: a models directory, explicit ``name=location`` entries, and (later) a pretrained catalog.

The registry only names models and where they live; loading them is the pool's job. ``describe`` peeks into
an uncompressed ``.nemo`` archive's ``model_config.yaml`` so ``GET /models`` can show a model's architecture
before it is ever loaded.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from service.errors import ConfigurationError, ModelNotFound
from service.settings import Settings

log = logging.getLogger("aviary.registry")

Source = Literal["directory", "explicit", "pretrained"]
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """A model that can be loaded: its name, where it was declared, and where its checkpoint is."""

    name: str
    source: Source
    location: str


class Catalog(Protocol):
    """Seam for the pretrained-model catalog (a later issue): extra models known by name."""

    def specs(self) -> list[ModelSpec]: ...


class ModelRegistry:
    """The available models and the default one.

    Raises:
        ConfigurationError: the default model is not among the available ones.
    """

    def __init__(self, specs: Iterable[ModelSpec], default: str | None = None):
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self._specs[spec.name] = spec  # later declarations win (explicit entries override the directory)
        if default is not None and default not in self._specs:
            raise ConfigurationError(
                f"AVIARY_DEFAULT_MODEL={default!r} is not an available model ({self._listing()})"
            )
        self.default = default if default is not None else next(iter(self._specs), None)

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog | None = None) -> ModelRegistry:
        """Build from ``model_dir``, ``models`` and the catalog; the default is the first explicit entry,
        else the alphabetically first directory model, unless ``default_model`` says otherwise."""
        explicit = [_explicit_spec(name, location) for name, location in settings.models.items()]
        found = _scan_directory(settings.model_dir) if settings.model_dir else []
        pretrained = catalog.specs() if catalog else []
        first = next(iter([*explicit, *found]), None)
        default = settings.default_model or (first.name if first else None)
        registry = cls([*pretrained, *found, *explicit], default)
        for name in settings.preload:
            registry.get(name, error=ConfigurationError)
        return registry

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def get(self, name: str, error: type[Exception] = ModelNotFound) -> ModelSpec:
        """The spec called ``name``.

        Raises:
            ModelNotFound: (or ``error``) no such model; the message lists the available names.
        """
        try:
            return self._specs[name]
        except KeyError:
            message = f"model '{name}' is not available; {self._listing()}"
            raise (error(message, param="model") if error is ModelNotFound else error(message)) from None

    def resolve(self, name: str | None) -> ModelSpec:
        """The named model, or the default one when ``name`` is None or empty."""
        if name:
            return self.get(name)
        if self.default is None:
            raise ModelNotFound(
                "no model is configured: set AVIARY_MODEL_DIR to a directory of .nemo files or "
                "AVIARY_MODELS to name=path pairs", param="model",
            )
        return self._specs[self.default]

    def _listing(self) -> str:
        names = ", ".join(sorted(self._specs))
        return f"available models: {names}" if names else "no models are configured (AVIARY_MODEL_DIR, AVIARY_MODELS)"


def _scan_directory(directory: Path) -> list[ModelSpec]:
    if not directory.is_dir():
        raise ConfigurationError(f"AVIARY_MODEL_DIR={str(directory)!r} is not a directory")
    files = sorted(p for p in directory.glob("*.nemo") if p.is_file())
    return [ModelSpec(p.stem, "directory", str(p.resolve())) for p in files]


def _explicit_spec(name: str, location: str) -> ModelSpec:
    path = Path(location).expanduser()
    if path.exists():
        return ModelSpec(name, "explicit", str(path.resolve()))
    if _HUB_NAME.match(location) or location.startswith(("hf://", "ngc:", "nvidia/")):
        raise ConfigurationError(
            f"AVIARY_MODELS entry {name}={location}: hub model names are not supported yet; "
            "download the .nemo file and give its local path"
        )
    raise ConfigurationError(f"AVIARY_MODELS entry {name}={location}: no such file")


def describe(spec: ModelSpec) -> dict[str, Any]:
    """What can be known about a model without loading it (empty when the archive cannot be peeked)."""
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
        "tasks": ["transcribe", "translate"] if "MultiTask" in target else ["transcribe"] if target else None,
    }
