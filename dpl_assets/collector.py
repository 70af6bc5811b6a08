"""Python's cyclic garbage collector kept out of the heavy libraries' imports.

Importing Dagster, torch, transformers' wav2vec2 modules and mediapipe makes a few million
objects that live as long as the process. The collector, triggered by allocation counts,
runs a full collection about 8 times on the way, each walking every object made so far
and finding almost nothing: 1.2-1.4 s of CPU per process (measured with ``gc.callbacks``
on the 12-clip benchmark: 2.6 s of a ~58 s ``dpl run``, done again in every worker).

:func:`paused` turns the collector off for a block (nesting and threads allowed: it is
turned back on when the last pause ends, if it was on before); with ``freeze``, the
garbage already there is collected first and the objects alive at the end move to the
permanent generation (:func:`gc.freeze`), so the full collections that come later skip
them too. Freeze only where what is alive lives for the process anyway (start-up, before
any run): a frozen object that later becomes cyclic garbage is never collected (objects
freed by reference counting are freed as always), and the imports' own cyclic garbage is
frozen with them: ~15,000 objects, ~10 MB of RSS for the imports above (a collection
after the imports would free them for ~0.35 s of CPU, a quarter of what is saved).
:func:`import_modules` imports modules so, in a thread of their own (and with the modules
they import only for helpers never called here made lazily: :mod:`dpl_assets.lazy_imports`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType

from dpl_assets import lazy_imports

_lock = threading.Lock()
_pauses: set[object] = set()  # one token per block inside paused(), in any thread
_was_enabled = False


@contextlib.contextmanager
def paused(freeze: bool = False) -> Iterator[None]:
    """The cyclic collector off inside the block. ``freeze``: the garbage there is already
    is collected first (cheap once earlier freezes took the rest out), and what is alive at
    the block's end is frozen (see the module) before the collector is turned back on."""
    global _was_enabled
    token = object()
    if freeze:
        gc.collect()  # garbage made before the block is freed, not frozen
    with _lock:
        if not _pauses:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses.add(token)
    try:
        yield
    finally:
        _end_pause(token, freeze)


def _end_pause(token: object, freeze: bool) -> None:
    """End the pause ``token``; safe to repeat, so a Ctrl-C that lands in it is held until
    it is done (then raised): the collector must not stay off."""
    interrupted = False
    while True:
        try:
            with _lock:
                if token in _pauses:
                    if freeze:
                        gc.freeze()
                    _pauses.discard(token)
                if not _pauses and _was_enabled and not gc.isenabled():
                    gc.enable()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def import_modules(modules: Iterable[str], freeze: bool = False) -> list[ModuleType]:
    """Import ``modules`` (dotted names, in order) with the collector paused (and, with
    ``freeze``, frozen after: see :func:`paused`); returns them. The imports run in a
    thread of their own: a module that keeps an exception from its import (mediapipe
    does: see :func:`dpl_assets.nodes.mediapipe_faces.import_mediapipe`) keeps that
    thread's frames, not the caller's and their locals. Raises what an import raises
    (ImportError...), in the caller. A Ctrl-C ends the caller's wait; the import goes on
    in its thread (a later call waits for it, as ``importlib`` does).

    When every module is in ``sys.modules`` already, they are imported (returned) here,
    which waits for one another thread is still importing."""
    names = tuple(modules)
    if all(name in sys.modules for name in names):
        return [importlib.import_module(name) for name in names]
    imported: list[ModuleType] = []
    failed: list[BaseException] = []

    def load() -> None:
        try:
            with lazy_imports.deferred():  # their plotting helpers' pyplot: loaded if used
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
