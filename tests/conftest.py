from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MAGAZINES_META = SHARED_DATA / "amazon-2018" / "meta_Magazine_Subscriptions.json.gz"


@pytest.fixture
def magazines_meta() -> Path:
    if not MAGAZINES_META.exists():
        pytest.skip(f"real Amazon 2018 file not found at {MAGAZINES_META} (../shared/data is absent)")
    return MAGAZINES_META
