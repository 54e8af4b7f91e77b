"""Transfer Learning Lab: compare transfer-learning strategies on small image data sets."""

import os

# OpenMP threads that spin while they wait for work starve everything else on a small
# machine: with the web server, a worker and a test or two sharing 2 cores, a training step
# measured 7x slower with the default (active) waiting than with passive waiting. This must
# be set before torch loads its OpenMP runtime; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tl_core.allocator import tune_malloc  # noqa: E402

tune_malloc()

__version__ = "0.1.0"
