"""Unpickling that cannot run code.

A pickle is a program: ``pickle.load`` imports and calls whatever the file names, before the
caller sees the result. Every pickle llmhd reads (RLMRec datasets, entries of an old answer
cache) goes through `restricted_loads`, whose unpickler resolves only the names a policy
allows and refuses anything else with `RefusedClass`, before a single call is made.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections.abc import Callable
from typing import Any, BinaryIO

# (module, name) as written in the pickle -> the object to use, or None to refuse.
Policy = Callable[[str, str], Any]


class RefusedClass(pickle.UnpicklingError):
    """The pickle names a global the policy does not allow."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refuses to load class {module}.{name}")
        self.module = module
        self.name = name
        self.qualified = f"{module}.{name}"


class _Restricted(pickle.Unpickler):
    def __init__(self, file: BinaryIO, policy: Policy) -> None:
        super().__init__(file)
        self._policy = policy

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol < 3 writes __builtin__, copy_reg...) as pickle itself maps them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        # Deliberately not super().find_class: that imports the module the file names.
        found = self._policy(module, name)
        if found is None:
            raise RefusedClass(module, name)
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


def restricted_load(file: BinaryIO, policy: Policy) -> Any:
    """Unpickle from ``file``, resolving globals only through ``policy``."""
    return _Restricted(file, policy).load()


def restricted_loads(data: bytes, policy: Policy) -> Any:
    return restricted_load(io.BytesIO(data), policy)


def no_globals(module: str, name: str) -> Any:
    """The strictest policy: plain containers, strings, numbers, booleans and None only
    (pickle builds those from opcodes alone, without naming a class)."""
    return None
