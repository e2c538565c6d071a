"""The speed and scale benchmark (docs/performance.md): `bash hack/bench.sh [--quick]`.

One module per measurement, plus the runner. Everything measured runs from a
regular (non-editable) install of the checkout in a venv of its own, because
the editable `.venv`'s `.pth` hooks slow every Python start and would flatter
any ratio against `python -c pass`. The harness itself (this package and
hack/localenv) runs in the developer `.venv`.
"""

import sys
from pathlib import Path

_HACK = str(Path(__file__).resolve().parents[2] / "hack")
if _HACK not in sys.path:  # hack/localenv starts the real pieces
    sys.path.insert(0, _HACK)
