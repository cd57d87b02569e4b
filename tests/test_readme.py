"""The README's ```python blocks run, in order, in one namespace (the "Python" section's examples)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks()
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    assert namespace["x"].shape == (1000, 2) and bool(namespace["x"].isfinite().all())
    assert namespace["path"].shape == (33, 1000, 2)
    assert "1000" in capsys.readouterr().out
