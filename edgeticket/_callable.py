"""Subpackages that are also functions: ``edgeticket.export(...)`` and ``edgeticket.bench(...)``.

``edgeticket.export`` is a package (``export/api.py``, ``export/compact.py``, ...), and Python's
import system sets the package as the attribute of ``edgeticket`` whenever one of its modules
is imported, so a function of that name could not stay there. The package's module object is
made callable instead (module ``__class__`` assignment, supported since Python 3.5): calling it
calls the stage's API function.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling the module ``module_name`` calls ``target`` ('package.module:function')."""
    mod_name, func_name = target.split(":")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(mod_name), func_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
