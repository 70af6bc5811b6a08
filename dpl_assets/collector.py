"""Python's cyclic garbage collector kept out of the heavy libraries' imports.

Importing Dagster, torch, transformers' wav2vec2 modules and mediapipe makes a few million
objects that live as long as the process. The collector, triggered by allocation counts,
runs a full collection about 8 times on the way, each walking every object made so far
and finding almost nothing: 1.2-1.4 s of CPU per process (measured with ``gc.callbacks``
on the 12-clip benchmark: 2.6 s of a ~58 s ``dpl run``, done again in every worker).

:func:`paused` turns the collector off for a block (nesting and threads allowed: it is
turned back on when the last pause ends, if it was on before); with ``freeze``, the
objects alive at the end move to the permanent generation (:func:`gc.freeze`), so the
full collections that come later skip them too. Freeze only where what is alive lives
for the process anyway (start-up, before any run): a frozen object that later becomes
cyclic garbage is never collected (objects freed by reference counting are freed as
always), and the import's own cyclic garbage is frozen with it: ~15,000 objects, ~10 MB
of RSS for the imports above (a collection before freezing would free them for ~0.35 s
of CPU, a quarter of what is saved). :func:`import_modules` imports modules so, in a
thread of their own.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused(freeze: bool = False) -> Iterator[None]:
    """The cyclic collector off inside the block; ``freeze``: what is alive at its end is
    frozen (see the module) before the collector is turned back on."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if freeze:
                gc.freeze()
            if _depth == 0 and _was_enabled:
                gc.enable()


def import_modules(modules: Iterable[str], freeze: bool = False) -> list[ModuleType]:
    """Import ``modules`` (dotted names, in order) with the collector paused (and, with
    ``freeze``, frozen after: see :func:`paused`); returns them. The imports run in a
    thread of their own: a module that keeps an exception from its import (mediapipe
    does: see :func:`dpl_assets.nodes.mediapipe_faces.import_mediapipe`) keeps that
    thread's frames, not the caller's and their locals. Raises what an import raises
    (ImportError...), in the caller."""
    names = tuple(modules)
    if all(name in sys.modules for name in names):
        return [sys.modules[name] for name in names]
    imported: list[ModuleType] = []
    failed: list[BaseException] = []

    def load() -> None:
        try:
            imported.extend(importlib.import_module(name) for name in names)
        except BaseException as error:  # raised again in the caller
            failed.append(error)

    with paused(freeze):
        # a daemon: a Ctrl-C that ends the caller's wait does not keep the process up
        thread = threading.Thread(target=load, name="import-modules", daemon=True)
        thread.start()
        thread.join()
    if failed:
        raise failed[0]
    return imported
