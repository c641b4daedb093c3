import sys
from pathlib import Path

# lets tests name helper modules in this folder by import path (e.g. "user_labelers:EvenEnvLabeler")
sys.path.insert(0, str(Path(__file__).parent))
