import os
import sys
from pathlib import Path

# lets tests name helper modules in this folder by import path (e.g. "user_labelers:EvenEnvLabeler")
sys.path.insert(0, str(Path(__file__).parent))

# `make test` runs one pytest-xdist worker per core: one torch thread each (and in the CLI runs they start),
# instead of every worker's torch claiming all the cores
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
