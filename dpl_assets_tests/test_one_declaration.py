"""One declaration per node: the infrastructure names no built-in output datatype.

A node's name and its outputs' declarations live in its own module (plus the datatype
registry, the node list and the default graph); what the checks, storage, batch loop,
generated assets, graph, docs and jobs do with a datatype follows from its registry entry.
So none of these modules may hold a quoted literal of an output key (``"volume"``,
``'bboxes'``); words in docstrings and f-string text are not literals and are allowed.
"""

import re
from pathlib import Path

import pytest

import dpl_assets
from dpl_assets.assets import NODE_SPECS
from dpl_assets.datatypes import AUDIO_REFERENCE, DATATYPES, FRAME_REFERENCE, StorageFormat

PACKAGE = Path(dpl_assets.__file__).parent

INFRASTRUCTURE = (
    "validation.py",
    "checks.py",
    "storage/__init__.py",
    "storage/atomic.py",
    "storage/formats.py",
    "storage/io_manager.py",
    "storage/locks.py",
    "storage/store.py",
    "storage/handles.py",
    "storage/video_io.py",
    "assets/batch.py",
    "assets/video_step.py",
    "assets/step_log.py",
    "assets/claims.py",
    "assets/generated.py",
    "graph.py",
    "docs.py",
    "definitions.py",
)
"""Modules (paths under the package) that are neither a node's declaration nor a genuine
consumer of its outputs.

Not listed: ``storage/image_stack.py`` (``"images"`` in docstring examples), ``specs.py``
(``"landmarks"`` in its example of a custom node), ``report.py`` (``"faces"``: the report
shows face coverage), ``runner.py`` and ``automation.py`` (``"probe"``: every run of
videos records their probe first)."""

OUTPUT_KEYS = sorted({key for spec in NODE_SPECS for key in spec.outputs})


def quoted(key: str) -> re.Pattern[str]:
    """A string literal that is exactly ``key``, in single or double quotes."""
    return re.compile(r"""(["'])""" + re.escape(key) + r"\1")


def test_the_output_keys_are_found():
    """The scan has something to look for, and finds it where keys are declared."""
    assert {"volume", "bboxes", "images", "a2en"} <= set(OUTPUT_KEYS)
    registry = (PACKAGE / "datatypes.py").read_text(encoding="utf-8")
    registered = [key for key in OUTPUT_KEYS if key in DATATYPES]  # not the dataset-level ones
    assert all(quoted(key).search(registry) for key in registered)
    assert quoted("volume").search("x = DATATYPES['volume']")
    assert not quoted("volume").search('f"negative {key} values"; "volume_db"')


@pytest.mark.parametrize("module", INFRASTRUCTURE)
def test_infrastructure_names_no_output_key(module):
    text = (PACKAGE / module).read_text(encoding="utf-8")
    named = [key for key in OUTPUT_KEYS if quoted(key).search(text)]
    assert named == [], f"{module} names {named}: declare the rule in dpl_assets/datatypes.py"


def test_the_reference_artefacts_are_registered():
    """The checks' references resolve to a frame stack and a 16 kHz audio datatype."""
    assert DATATYPES[FRAME_REFERENCE].storage is StorageFormat.IMAGE_STACK
    assert DATATYPES[AUDIO_REFERENCE].storage is StorageFormat.WAV
