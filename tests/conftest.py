import os
import sys
from pathlib import Path

# One BLAS thread per test process (numpy reads this when it is first imported, so before any test module
# imports it): the suite runs as 2 xdist workers on 2 cores, and OpenBLAS's own threads then only spin
# against the other worker (5x the CPU time of the repair tests on a busy machine). Subprocesses inherit it.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# tests import their shared helpers (oracle.py) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))
