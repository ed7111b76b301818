"""FCRN models: the registry, the up-projection and pretrained-weight loading."""

from edgeticket.models.registry import ModelRecord, build_model, get_record, list_models

__all__ = ["ModelRecord", "build_model", "get_record", "list_models"]
