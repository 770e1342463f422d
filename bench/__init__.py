"""aviary's benchmark scripts (see bench/README.md)."""
