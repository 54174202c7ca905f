"""`python ext_onnxslim.py IN OUT`: PyPI OnnxSlim's default optimization, run in its own virtual environment
by bench_node_cases.py (never imported by onnxslim)."""
import sys

import onnxslim  # PyPI OnnxSlim in that environment, not ours

onnxslim.slim(sys.argv[1], sys.argv[2])
