"""Datapipeline as a Dagster asset project: talking videos -> avatar training data.

Importing the package is light (no Dagster): ``dpl run`` starts its worker processes
before it imports Dagster and the nodes (~1.4 s), so their start-up overlaps its own.
``defs`` (the code location's definitions: ``dagster dev -m dpl_assets``) and
``build_definitions`` are made on first use (PEP 562).
"""

# First, before any library registers its exit handlers (atexit runs them last-in first-out,
# so all of theirs run before this one's): see the module.
from dpl_assets import fast_exit

fast_exit.install()

import threading  # noqa: E402
from typing import Any  # noqa: E402

from dpl_assets import npy_header_lock  # noqa: E402

npy_header_lock.install()  # before any step's reader threads load a .npy

_LAZY = ("build_definitions", "defs")
_lazy_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lazy_lock:  # one build of ``defs`` however many threads ask at once
        if name not in globals():
            from dpl_assets.definitions import build_definitions

            globals()["build_definitions"] = build_definitions
            if name == "defs":
                globals()["defs"] = build_definitions()
    return globals()[name]


def __dir__() -> list[str]:
    # Dagster finds a module's definitions among its members (inspect.getmembers: dir()).
    return sorted({*globals(), *_LAZY})


__all__ = ["build_definitions", "defs"]
