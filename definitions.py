"""Top-level entry for `dagster dev -w workspace.yaml`: the package's Definitions."""
from entra_pipeline.definitions import defs

__all__ = ["defs"]
