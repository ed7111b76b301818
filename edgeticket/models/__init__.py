"""FCRN models: the registry, the up-projection and pretrained-weight loading.

The registry's names load on first use, so that the light modules here (``config``, ``card``)
do not pull in torchvision.
"""

__all__ = ["ModelRecord", "build_model", "get_record", "list_models"]


def __getattr__(name: str):
    if name in __all__:
        from edgeticket.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'edgeticket.models' has no attribute {name!r}")
