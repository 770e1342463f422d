"""NeMo manifests over HTTP: parsing entries, resolving their audio, running them in order, scoring them."""

from __future__ import annotations

from service.manifest.entries import ManifestItem, ManifestRequest, Upload, build_items, parse_manifest
from service.manifest.run import ManifestRun

__all__ = ["ManifestItem", "ManifestRequest", "ManifestRun", "Upload", "build_items", "parse_manifest"]
