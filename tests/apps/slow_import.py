"""An app whose import takes longer than the tests' --timeout (a model loaded at import)."""

import os
import time

time.sleep(float(os.environ.get("SLOW_IMPORT", "3")))

from arb_app import app  # noqa: E402,F401
