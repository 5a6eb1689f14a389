"""Ground-layer helpers that import nothing else of the package (atomic writes)."""
