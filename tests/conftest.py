import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLES = ROOT.parent / "shared" / "data" / "deepfashion_samples"


@pytest.fixture(scope="session")
def samples_root() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"shared sample set not found at {SAMPLES}")
    return SAMPLES
