"""The worker process `quorum run`'s supervisor starts: `python -m quorum.worker [CONFIG]`.

The service (`quorum.service.server.main_worker`) with this tree's composition root, which loads
the config and builds the pipeline from every installed feature and engine.
"""

from __future__ import annotations

import sys

from quorum import assembly
from quorum.service.server import main_worker

ARGV = (sys.executable, "-m", "quorum.worker")

if __name__ == "__main__":
    raise SystemExit(main_worker(sys.argv[1] if len(sys.argv) > 1 else None, assembly))
