import os
from pathlib import Path

import pytest

os.environ.setdefault("INOLIB_SMOKE", "1")
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
