"""The benchmark suites (`dfc bench --suite NAME`), installed as the package dfc.suites."""
