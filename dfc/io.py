"""Atomic output files: a reader sees the old file or the new one, never half of one.

Every writer builds the whole payload in memory first (so a payload that cannot be encoded
fails before the disk is touched), writes it to a temporary file in the target's directory,
flushes and fsyncs it, then renames it over the target with `os.replace`. If anything fails,
the temporary file is removed and an existing target is left exactly as it was. Parent
directories are created as needed.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from dfc.errors import DataError

__all__ = [
    "ensure_out_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_save_figure",
    "TEMP_PREFIX",
]

# Temporary files are named ".<target name>.<random>.tmp" next to the target.
TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _current_umask()


def ensure_out_dir(path: str | os.PathLike) -> Path:
    """Create directory `path` and its parents if missing (like `mkdir -p`) and return it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(
            f"output directory {str(p)!r} already exists as a file; remove it or choose "
            "another output directory."
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(
            f"cannot create output directory {str(p)!r} because one of its parents is a file; "
            "choose another output directory."
        ) from None
    except NotADirectoryError:
        raise DataError(
            f"cannot create output directory {str(p)!r} because one of its parents is a file; "
            "choose another output directory."
        ) from None
    except PermissionError:
        raise DataError(
            f"no permission to create output directory {str(p)!r}; choose a writable location."
        ) from None
    return p


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (best effort; not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, rename).

    On failure the temporary file is removed and any previous file at `path` is untouched.
    Returns the target path.
    """
    target = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(
            f"atomic_write_bytes: the payload for {str(target)!r} is a {type(data).__name__}, "
            "not bytes; encode it first or use atomic_write_text."
        )
    if target.is_dir():
        raise DataError(
            f"cannot write file {str(target)!r} because a directory has that name; remove it "
            "or choose another file name."
        )
    parent = ensure_out_dir(target.parent if str(target.parent) else Path("."))
    # The new file gets the usual permissions of a new file (0o666 minus umask), or the
    # previous file's mode if it is being replaced -- not the 0o600 of a temp file.
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    try:
        tmp = tempfile.NamedTemporaryFile(
            mode="wb", dir=parent, prefix=f"{TEMP_PREFIX}{target.name}.", suffix=_TEMP_SUFFIX,
            delete=False,
        )
    except PermissionError:
        raise DataError(
            f"no permission to write in directory {str(parent)!r} (for {str(target)!r}); "
            "choose a writable output location."
        ) from None
    tmp_name = tmp.name
    try:
        with tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            os.chmod(tmp_name, mode)
        except OSError:
            pass
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_dir(parent)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (encoded with `encoding`, newlines as given)."""
    if not isinstance(text, str):
        raise DataError(
            f"atomic_write_text: the payload for {str(path)!r} is a {type(text).__name__}, not "
            "a string; convert it with str() or use atomic_write_bytes."
        )
    return atomic_write_bytes(path, text.encode(encoding))


# --------------------------------------------------------------------------- JSON


def _key_path(parent: str, key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def _where(keypath: str) -> str:
    return f"key {keypath!r}" if keypath else "the top-level value"


def _jsonable(obj: Any, keypath: str, target: str) -> Any:
    """A copy of `obj` made of JSON types only; raises DataError (naming the key) on
    non-finite floats and on values JSON cannot store."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise DataError(
                f"cannot write {target!r}: {_where(keypath)} is {obj!r}, which JSON cannot "
                "store; replace it with a finite number or None before writing."
            )
        return float(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not (k is None or isinstance(k, (str, int, float, bool))):
                raise DataError(
                    f"cannot write {target!r}: a key under {_where(keypath)} is a "
                    f"{type(k).__name__}, but JSON keys must be strings; convert the key "
                    "with str()."
                )
            out[k] = _jsonable(v, _key_path(keypath, k), target)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, _key_path(keypath, i), target) for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    # numpy scalars/arrays and torch tensors: convert through .tolist() (CPU copy first).
    if hasattr(obj, "tolist") and callable(obj.tolist):
        if hasattr(obj, "detach") and hasattr(obj, "cpu"):
            obj = obj.detach().cpu()
        return _jsonable(obj.tolist(), keypath, target)
    raise DataError(
        f"cannot write {target!r}: {_where(keypath)} is a {type(obj).__name__}, which JSON "
        "cannot store; convert it to numbers, strings, lists or dicts first."
    )


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write `obj` as JSON (indent 2, key order kept, trailing newline) atomically.

    numpy scalars/arrays, torch tensors, tuples and paths are converted to JSON types. A NaN
    or infinite float anywhere raises DataError naming its key before anything is written.
    """
    plain = _jsonable(obj, "", str(path))
    text = json.dumps(plain, indent=indent, sort_keys=False, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


# --------------------------------------------------------------------------- arrays, figures


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """Save `array` in .npy format (allow_pickle=False) atomically, at exactly `path` (no
    ".npy" is appended). torch tensors are copied to the CPU first."""
    import numpy as np

    if hasattr(array, "detach") and hasattr(array, "cpu"):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    buf = io.BytesIO()
    try:
        np.save(buf, arr, allow_pickle=False)
    except ValueError:
        raise DataError(
            f"cannot save {str(path)!r}: the array has dtype {arr.dtype}, which needs pickling; "
            "convert it to a numeric array first."
        ) from None
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_figure(path: str | os.PathLike, fig: Any, dpi: int = 150) -> Path:
    """Render the matplotlib Figure `fig` into memory and write it to `path` atomically.

    The format follows the file suffix (".png", ".pdf", ".svg", ...); no suffix means PNG.
    The figure is not closed.
    """
    target = Path(path)
    fmt = target.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise DataError(
            f"cannot save figure {str(target)!r}: unknown image format {fmt!r}; use one of "
            f"{', '.join('.' + k for k in sorted(supported))}."
        )
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return atomic_write_bytes(target, buf.getvalue())


MAX_INPUT_BYTES = 2**30  # a checkpoint or data file dfc reads: 1 GiB at most


def check_input_file(path, what: str, limit: int | None = None) -> None:
    """Refuse, before reading, a path that is not a regular file (a device such as /dev/zero, a pipe)
    or that is larger than `limit` bytes. A missing path or a directory is left to the reader's own message."""
    import stat as _stat

    from dfc.errors import DataError, LimitError

    limit = MAX_INPUT_BYTES if limit is None else limit
    try:
        st = os.stat(path)
    except OSError:
        return
    if _stat.S_ISDIR(st.st_mode):
        return
    if not _stat.S_ISREG(st.st_mode):
        raise DataError(f"the {what} {path} is not a regular file (a device, a pipe or a socket); dfc reads only "
                        f"regular files.", None, f"Give the path of the {what} itself.")
    if st.st_size > limit:
        raise LimitError(f"the {what} {path} has {st.st_size:,} bytes; dfc reads files of at most {limit:,} bytes.",
                         None, f"Give a smaller {what}.")
