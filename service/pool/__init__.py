"""Which models exist (registry), which are loaded (warm pool), and how they run (backends)."""

from __future__ import annotations

from service.pool import hub
from service.pool.backend import Backend, BackendFactory, DecodeOptions, check_options
from service.pool.registry import Catalog, ModelRegistry, ModelSpec, describe
from service.pool.warm import WarmPool

__all__ = [
    "Backend", "BackendFactory", "Catalog", "DecodeOptions", "ModelRegistry", "ModelSpec", "WarmPool",
    "check_options", "describe", "hub",
]
