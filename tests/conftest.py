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

# Under pytest-xdist (`make test`: one worker per core) each worker gets its share of the cores,
# before torch is imported: workers whose OpenMP threads outnumber the cores stall one another.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(items):
    """The slow tests first, so that the workers start on the longest ones and finish together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def samples_root() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"shared sample set not found at {SAMPLES}")
    return SAMPLES
