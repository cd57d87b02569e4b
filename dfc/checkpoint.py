"""Checkpoints: safetensors with a JSON header; loading never unpickles.

A checkpoint is one safetensors file. Its metadata key "dfc" holds a JSON header: the kind of
checkpoint (`score`, `disc`, `gan`), the architecture, the normalisation, the spec (for
discriminator stacks and generators), the training configuration, a description of the data
with a hash of its bytes, the progress of training, and a sha256 of every tensor (name, dtype,
shape and bytes, in name order). Files are written atomically (`dfc.io.atomic_write_bytes`).

`load` checks, in order, and raises a DataError naming the file and what is wrong: that the file
exists and is readable; that its 8-byte header length and JSON header fit in the file
(truncation); that safetensors can read every tensor (corruption); that it carries a dfc header of
a format this dfc reads (an entry missing from the header, as a damaged key, is reported by name
when it is read: `Header`); that it is the kind asked for; that the tensors match their checksum
(a flipped bit); that floating tensors are finite; and that the header entries in `expect`
equal the caller's (a mismatch names the entry, its value and the expected one).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

from dfc.errors import DataError

FORMAT = 1
KINDS = ("score", "disc", "gan")
HINT = "Train it again, or resume from an intact checkpoint."


def data_hash(x: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (first 16 hex digits)."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(path: str | Path, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    """Write `tensors` and `header` (JSON-able) to `path` atomically."""
    from safetensors.torch import save as st_save

    from dfc.io import atomic_write_bytes

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"dfc": json.dumps({**header, "format": FORMAT, "tensors_sha256": tensors_hash(flat)}, sort_keys=True)}
    return atomic_write_bytes(path, st_save(flat, metadata=meta))


OTHER_FORMATS = ((b"\x93NUMPY", "a NumPy .npy file"), (b"PK\x03\x04", "a zip archive (torch.save or .npz)"),
                 (b"\x80", "a pickle (torch.save's old format)"))  # never unpickled: named by their first bytes


def _corrupt(path: Path, what: str, blob: bytes = b"") -> DataError:
    """A checkpoint that is not a readable safetensors file: another format named by its first bytes (when
    its ninth byte is not the '{' that opens every safetensors header), else corrupt or truncated."""
    for magic, kind in OTHER_FORMATS if blob[8:9] != b"{" else ():  # a safetensors header starts with '{'
        if blob.startswith(magic):
            return DataError(f"checkpoint {path} is {kind}, not a safetensors checkpoint.", None,
                             "Give the path of a .safetensors file written by `dfc train`.")
    return DataError(f"checkpoint {path} is corrupt or truncated: {what}.", None, HINT)


class Header(dict):
    """A checkpoint's dfc header (nested entries too): reading an entry it lacks, as a bit flipped in a
    key's name would make it, is a corrupt-checkpoint DataError naming the entry, not a KeyError."""

    def __init__(self, entries: dict, path: Path, where: str = ""):
        super().__init__({k: Header(v, path, f"{where}{k}.") if isinstance(v, dict) else v for k, v in entries.items()})
        self.path, self.where = path, where

    def __missing__(self, key):
        raise _corrupt(self.path, f"its header has no entry {self.where}{key} (a damaged key, or not written by dfc)")


def read_header(path: str | Path) -> tuple[bytes, dict]:
    """The file's bytes and its dfc header, after the structural checks (no tensor is decoded)."""
    path = Path(path)
    from dfc.io import check_input_file

    check_input_file(path, "checkpoint")
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no checkpoint at {path}.", None, "Give the path of a .safetensors file written by "
                        "`dfc train` (relative paths are tried from the current directory, then the spec's).") from None
    except IsADirectoryError:
        raise DataError(f"checkpoint {path} is a directory.", None, "Give the .safetensors file inside it.") from None
    except OSError as exc:
        raise DataError(f"cannot read checkpoint {path}: {exc.strerror or exc}.", None,
                        "Give the path of a .safetensors file written by `dfc train`.") from None
    if len(blob) < 8:
        raise _corrupt(path, f"it has {len(blob)} bytes, fewer than the 8 of a safetensors header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n < 2 or 8 + n > len(blob):
        raise _corrupt(path, f"its header claims {n} bytes but the file has {len(blob) - 8} after the length", blob)
    try:
        raw = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"its JSON header does not parse ({exc})", blob) from None
    if not isinstance(raw, dict):
        raise _corrupt(path, "its header is not a JSON object")
    end = 0
    for name, info in raw.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise _corrupt(path, f"tensor {name!r} has no valid data offsets") from None
    if 8 + n + end > len(blob):
        raise _corrupt(path, f"its tensors need {end} bytes of data and the file holds {len(blob) - 8 - n}")
    meta = raw.get("__metadata__") or {}
    if "dfc" not in meta:
        raise DataError(f"checkpoint {path} is a safetensors file without a dfc header, not a dfc checkpoint.", None,
                        "Give a file written by `dfc train`.")
    try:
        header = json.loads(meta["dfc"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"its dfc header does not parse ({exc})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its dfc header is not a JSON object")
    fmt = header.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise DataError(f"checkpoint {path} has format {fmt!r}; this dfc reads format {FORMAT} and older.", None,
                        "Upgrade dfc, or train the checkpoint again with this version.")
    return blob, Header(header, path)


def load(path: str | Path, kind: str, expect: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and header of a checkpoint of `kind`; `expect` lists header entries that must match."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    blob, header = read_header(path)
    if header["kind"] != kind:  # a missing kind: corrupt (Header)
        raise DataError(f"checkpoint {path} holds a {header['kind']!r} checkpoint, not a {kind!r} one.", None,
                        f"Give a {kind} checkpoint (written by `dfc train {kind}`).")
    try:
        tensors = st_load(blob)  # safetensors: plain bytes, never pickle
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise _corrupt(path, f"safetensors cannot read it ({exc})") from None
    want = header.get("tensors_sha256")
    if want is not None and tensors_hash(tensors) != want:
        raise _corrupt(path, "its tensors do not match the checksum in its header (the bytes changed after it "
                             "was written)")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(f"checkpoint {path} holds non-finite values in tensor {name!r}: the training that "
                            f"wrote it diverged.", None, "Train again with a smaller learning rate.")
    for key, value in (expect or {}).items():
        if header.get(key) != value:
            raise DataError(f"checkpoint {path} does not match: its {key} is {_show(header.get(key))}, expected "
                            f"{_show(value)}{_diff(header.get(key), value)}.", None,
                            "Resume with the same settings and data, or start a new run without --resume.")
    return tensors, header


def _show(v) -> str:
    text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 160 else text[:157] + "..."


def _diff(have, want) -> str:
    """' (lr: 0.001 here, 0.002 expected; ...)' for two dicts that differ in a few entries."""
    if not (isinstance(have, dict) and isinstance(want, dict)):
        return ""
    keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if not keys:
        return ""
    return " (" + "; ".join(f"{k}: {_show(have.get(k))} in the file, {_show(want.get(k))} now" for k in keys[:4]) + ")"


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: str | Path) -> None:
    """Load `prefix.*` tensors into `module` strictly; a missing, extra or misshapen tensor is a DataError."""
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise DataError(f"checkpoint {path} does not match its architecture: "
                        + (f"missing tensors {', '.join(prefix + '.' + k for k in missing[:3])}" if missing else "")
                        + ("; " if missing and extra else "")
                        + (f"unexpected tensors {', '.join(prefix + '.' + k for k in extra[:3])}" if extra else "")
                        + ".", None, HINT)
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise DataError(f"checkpoint {path} does not match its architecture: tensor {prefix}.{k} has shape "
                            f"{tuple(state[k].shape)}, the network needs {tuple(v.shape)}.", None, HINT)
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
