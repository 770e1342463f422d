"""aviary's HTTP service: FastAPI routes → audio decoding → dynamic batching → warm model pool → ``models/``."""

from __future__ import annotations

__version__ = "0.1.0"
