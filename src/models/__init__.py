"""Model components, one module each; ``configs/`` holds the paper models' architecture configs."""

import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def shipped_config(name: str) -> dict:
    """A shipped architecture config (``src/models/configs/<name>.json``) as a dict."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())
