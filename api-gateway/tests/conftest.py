from __future__ import annotations

import sys
from pathlib import Path

# The stand-ins module sits beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
