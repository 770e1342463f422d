"""Suite-wide defaults: the bundled demo model is hidden unless a test asks for it (tests that count or list
models, or expect "no model configured", predate it); ``tests/integration/test_demo_model.py`` and the
registry tests turn it on explicitly."""

from __future__ import annotations

import os

os.environ.setdefault("AVIARY_DEMO_MODEL", "false")
