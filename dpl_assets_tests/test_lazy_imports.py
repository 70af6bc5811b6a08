"""Deferred imports: mediapipe imported through ``collector.import_modules`` leaves
``matplotlib.pyplot`` lazy, works, and pyplot loads whole at its first use (fresh
processes: what a process imported earlier would decide the result)."""

from __future__ import annotations

import json

from dpl_assets_tests.fresh_python import script_output

STATE = """
import json, sys, types
def state():
    module = sys.modules.get("matplotlib.pyplot")
    return {
        "pyplot": None if module is None else type(module).__name__,
        # imported by pyplot alone among what mediapipe loads
        "pylab_helpers": "matplotlib._pylab_helpers" in sys.modules,
        "finders": [type(finder).__name__ for finder in sys.meta_path],
    }
"""

THROUGH_IMPORT_MODULES = (
    STATE
    + """
import numpy as np
from dpl_assets import collector
mp = collector.import_modules(["mediapipe"])[0]
after_import = state()

# mediapipe works: a blank frame goes through the face mesh (no face in it)
with mp.solutions.face_mesh.FaceMesh(static_image_mode=True) as mesh:
    found = mesh.process(np.zeros((64, 64, 3), np.uint8)).multi_face_landmarks

from mediapipe.python.solutions import drawing_utils
figure = drawing_utils.plt.figure  # the first use loads pyplot
print(json.dumps({"after_import": after_import, "found": found, "figure": callable(figure),
                  "after_use": state()}))
"""
)


def test_mediapipe_through_import_modules_leaves_pyplot_lazy_until_used():
    out = json.loads(script_output(THROUGH_IMPORT_MODULES))
    assert out["after_import"]["pyplot"] == "_LazyModule"
    assert out["after_import"]["pylab_helpers"] is False
    assert out["after_import"]["finders"][0] == "_DeferringFinder"  # there, switched off
    assert out["found"] is None
    assert out["figure"] is True
    assert out["after_use"]["pyplot"] == "module" and out["after_use"]["pylab_helpers"] is True


def test_a_module_imported_before_stays_an_ordinary_one():
    out = json.loads(
        script_output(
            STATE
            + """
import matplotlib.pyplot
from dpl_assets import collector
collector.import_modules(["mediapipe"])
print(json.dumps(state()))
"""
        )
    )
    assert out["pyplot"] == "module" and out["pylab_helpers"] is True


def test_outside_the_block_imports_are_ordinary():
    out = json.loads(
        script_output(
            STATE
            + """
from dpl_assets import lazy_imports
with lazy_imports.deferred():
    pass
import matplotlib.pyplot
print(json.dumps(state()))
"""
        )
    )
    assert out["pyplot"] == "module" and out["pylab_helpers"] is True


def test_the_finder_never_edits_a_meta_path_list_in_place():
    """An import going on in another thread iterates the list it started with: editing
    that list could make it skip a finder. The finder goes in once, by rebinding."""
    out = json.loads(
        script_output(
            """
import json, sys
from dpl_assets import lazy_imports
first = sys.meta_path
first_contents = list(first)
with lazy_imports.deferred():
    second = sys.meta_path
    second_contents = list(second)
with lazy_imports.deferred():
    third = sys.meta_path
print(json.dumps({
    "first_untouched": list(first) == first_contents,
    "rebound_once": second is not first and third is second and list(second) == second_contents,
    "front": type(second[0]).__name__,
    "rest": second[1:] == first_contents,
}))
"""
        )
    )
    assert out == {
        "first_untouched": True,
        "rebound_once": True,
        "front": "_DeferringFinder",
        "rest": True,
    }
