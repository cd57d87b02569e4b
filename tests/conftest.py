from pathlib import Path

import numpy as np

SPECS = Path(__file__).parent / "specs"
FAMILY = SPECS / "gaussian_family.dfs"  # its target: N(FAMILY_MEAN, FAMILY_COV)
FAMILY_MEAN = np.array([1.0, -0.5])
FAMILY_COV = np.array([[1.2, 0.4], [0.4, 0.6]])
