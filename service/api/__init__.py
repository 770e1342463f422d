"""The HTTP layer (the only place that imports FastAPI)."""

from __future__ import annotations

from service.api.app import create_app

__all__ = ["create_app"]
