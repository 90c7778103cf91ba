"""pytest set-up shared by tests/ and the notebooks (nbval).

The test command runs the series in quick mode and keeps its products in runs/pytest,
apart from a user's own runs. Both can be overridden by setting the variables first.
"""

import os
from pathlib import Path

os.environ.setdefault("CXR_QUICK", "1")
os.environ.setdefault("CXR_RUN_DIR", str(Path(__file__).resolve().parent / "runs" / "pytest"))
os.environ.setdefault("MPLBACKEND", "Agg")
