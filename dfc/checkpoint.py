"""Checkpoints: safetensors with a JSON header; loading never unpickles.

The header (safetensors metadata key "dfc") records what the tensors are: the kind of
checkpoint, the architecture, the normalisation, the training configuration and a hash of the
data. A load names the expected kind and architecture; any mismatch, a truncated or corrupt
file, or a missing tensor is a DataError that names the file and what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from dfc.errors import DataError

FORMAT = 1


def data_hash(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def save(path: str | Path, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    from safetensors.torch import save as st_save

    from dfc.io import atomic_write_bytes

    meta = {"dfc": json.dumps({"format": FORMAT, **header}, sort_keys=True)}
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
    return atomic_write_bytes(path, blob)


def load(path: str | Path, kind: str, expect: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and header of a checkpoint of `kind`; `expect` lists header entries that must match."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read checkpoint {path}: {exc.strerror or exc}.", None,
                        "Give the path of a .safetensors file written by `dfc train`.") from None
    try:
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__", {})
        header = json.loads(meta["dfc"])
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError, TypeError) as exc:
        raise DataError(f"checkpoint {path} is corrupt or truncated, or not a dfc checkpoint ({exc}).", None,
                        "Train it again, or resume from an intact checkpoint.") from None
    if header.get("kind") != kind:
        raise DataError(f"checkpoint {path} holds a {header.get('kind')!r} checkpoint, not a {kind!r} one.", None,
                        f"Give a {kind} checkpoint.")
    for key, want in (expect or {}).items():
        if header.get(key) != want:
            raise DataError(f"checkpoint {path} does not match: its {key} is {header.get(key)!r}, expected {want!r}.",
                            None, "Resume with the same settings, or start a new run without --resume.")
    return tensors, header
