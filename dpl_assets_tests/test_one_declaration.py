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


CONSUMERS: dict[str, set[str]] = {
    # Nodes read the datatypes they declare as inputs, optional or configured.
    "assets/a2en.py": {"exp", "images", "landmarks3d", "pose", "volume", "wav", "wav2vec"},
    "assets/aligned_crops.py": {"images", "landmarks"},
    "assets/crops.py": {"images", "landmarks", "raw_bboxes"},
    "assets/face3d.py": {"bboxes", "crops", "images"},
    "assets/faces.py": {"images", "volume", "wav"},  # follow="speaking" reads the audio
    # The face tracks, frame times and audio it syncs; "faces" is its group.
    "assets/av_sync.py": {"face_tracks", "faces", "images", "speech", "volume", "wav"},
    "assets/scenes.py": {"images"},
    "assets/segments.py": {
        "av_sync",
        "face_mask",
        "frame_quality_ok",
        "images",
        "scenes",
        "speech_spans",
    },
    "assets/speech.py": {"wav"},
    "assets/quality.py": {"head_pose", "images", "landmarks"},
    "assets/visualize.py": {
        "bboxes",
        "face_mask",
        "head_pose",
        "images",
        "landmarks",
        "raw_bboxes",
        "wav",
    },
    "assets/wav2vec.py": {"volume", "wav"},  # Wav2vecNode also writes volume, as the original
    # The packers' default datatypes and the original's audio-blink feature.
    "assets/packing.py": {
        "av_sync",  # the offset av_offset moves the audio by
        "bboxes",
        "blinks",
        "cam",
        "crops",
        "exp",
        "head_pose",
        "images",
        "landmarks",
        "landmarks3d",
        "light",
        "pose",
        "render_normal",
        "render_uv",
        "shape",
        "volume",
        "wav2vec",
    },
    # The dataset pack's sources (training files) and the summary's inputs.
    "assets/dataset.py": {
        "faces",
        "h5_dataset",
        "probe",
        "source_sequence",
        "vid2vid_audio",
        "vid2vid_dataset",
        "volume",
        "wav2vec",
    },
    "visualize/summary_inputs.py": {"faces", "probe", "segments", "volume", "wav2vec"},
    "visualize/summary_plots.py": {"volume"},
    "visualize/rejection_reasons.py": {"wav2vec"},  # rejections counted by the step
    "visualize/overlay.py": {"face_mask", "head_pose", "landmarks"},  # what it draws
    "packing/reader.py": {"crops", "images", "segment_ids", "wav2vec"},  # default windows;
    # and the kept segments it serves
    "packing/video_pack.py": {"face_mask", "images"},  # the validity mask; a "kind" label
    "report.py": {"faces", "segments", "speech_spans"},  # face coverage, curation seconds
    "runner.py": {"probe"},  # every run of videos records their probe first
    "automation.py": {"probe"},
    "discovery.py": {"wav"},  # the seed's inputs JSON example
    # Words that are also output keys: EMOCA's and FLAME's own parameter names, FLAME's
    # mesh faces, docstring examples.
    "face3d/emoca.py": {"cam", "exp", "light", "pose", "shape", "tex"},
    "face3d/flame_layer.py": {"exp", "faces", "pose", "shape"},
    "face3d/safe_pickle.py": {"shape"},
    "specs.py": {"landmarks"},
    "storage/image_stack.py": {"images"},
}
"""The package's genuine consumers of output keys besides the declaring modules and the
registry, each with what it reads them for."""


def declaring_modules() -> dict[str, set[str]]:
    """Output key -> the modules (paths under the package) declaring a node writing it."""
    import inspect

    found: dict[str, set[str]] = {}
    for spec in NODE_SPECS:
        function = spec.compute or spec.asset.op.compute_fn.decorated_fn
        module = Path(inspect.getsourcefile(function)).relative_to(PACKAGE).as_posix()
        for key in spec.outputs:
            found.setdefault(key, set()).add(module)
    return found


def test_an_output_key_appears_only_where_declared_registered_or_consumed():
    """``grep -l`` of a node's output key over the package lists its declaring module,
    the registry, and the consumers in :data:`CONSUMERS`; nothing else."""
    declared = declaring_modules()
    strays: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module in ("datatypes.py", "datatype_rules.py"):
            continue
        text = path.read_text(encoding="utf-8")
        named = [
            key
            for key in OUTPUT_KEYS
            if quoted(key).search(text)
            and module not in declared[key]
            and key not in CONSUMERS.get(module, set())
        ]
        if named:
            strays[module] = named
    assert strays == {}, f"output keys outside their declaration and consumers: {strays}"
