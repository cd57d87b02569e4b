from pathlib import Path

import numpy as np
import pytest

SPECS = Path(__file__).parent / "specs"
FAMILY = SPECS / "gaussian_family.dfs"  # its target: N(FAMILY_MEAN, FAMILY_COV)
FAMILY_MEAN = np.array([1.0, -0.5])
FAMILY_COV = np.array([[1.2, 0.4], [0.4, 0.6]])


@pytest.fixture(autouse=True, scope="session")
def _floor_cache(tmp_path_factory):
    """Floors cached by the tests go to a temporary folder, never to the user's cache (dfc.floors)."""
    import os

    old = os.environ.get("DFC_CACHE")
    os.environ["DFC_CACHE"] = str(tmp_path_factory.mktemp("dfc-cache"))
    yield
    if old is None:
        os.environ.pop("DFC_CACHE", None)
    else:
        os.environ["DFC_CACHE"] = old
