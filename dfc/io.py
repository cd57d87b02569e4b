"""Atomic output files and folders: a reader sees the old output or the new one, never half of one.

Every writer builds the whole payload in memory first (so a payload that cannot be encoded
fails before the disk is touched), writes it to a temporary file in the target's directory,
flushes and fsyncs it, then renames it over the target with `os.replace`. If anything fails,
the temporary file is removed and an existing target is left exactly as it was. Parent
directories are created as needed.

A *set* of files that belong together (`dfc run`'s samples, metrics and picture) is written as
a whole folder: `replace_folder` writes the set into a temporary sibling folder and swaps it for
the old one in one rename, so the folder's path names the complete old set or the complete new
set at every moment, also after a crash or `kill -9` at any point.

Every failure of the system while writing (no permission, a read-only file system, a full disk,
a place where no file can be) is an `OutputError` naming the path and the fix.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from dfc.errors import DataError, OutputError

__all__ = [
    "ensure_out_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_save_figure",
    "npy_bytes",
    "figure_bytes",
    "json_bytes",
    "output_error",
    "check_writable",
    "check_set_folder",
    "replace_folder",
    "recover_folder",
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


def output_error(exc: OSError, path: str | os.PathLike) -> OutputError:
    """The one-paragraph error for an OSError raised while writing `path`: what the system said, and the fix."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what, fix = "the disk (or the user's quota) is full", "Free some space, or write to another disk (--out)."
    elif code == errno.EROFS:
        what, fix = "it is on a read-only file system", "Write to a writable file system (--out)."
    elif code in (errno.EACCES, errno.EPERM):
        what, fix = "no permission to write there", "Choose a writable place (--out), or fix the folder's permissions."
    else:
        what = exc.strerror or str(exc) or type(exc).__name__
        fix = "Choose another place (--out), a folder on an ordinary writable file system."
    return OutputError(f"cannot write {str(path)!r}: {what}. Nothing was written there; what was there before is "
                       f"unchanged.", None, fix)


def ensure_out_dir(path: str | os.PathLike) -> Path:
    """Create directory `path` and its parents if missing (like `mkdir -p`) and return it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(
            f"output directory {str(p)!r} already exists as a file; remove it or choose "
            "another output directory."
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            f"cannot create output directory {str(p)!r} because one of its parents is a file; "
            "choose another output directory."
        ) from None
    except OSError as exc:
        raise output_error(exc, p) from None
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
        raise OutputError(
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
    except OSError as exc:
        raise output_error(exc, target) from None
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
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise output_error(exc, target) from None
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


def json_bytes(obj: Any, path: str | os.PathLike, indent: int = 2) -> bytes:
    """`obj` as UTF-8 JSON (indent 2, key order kept, trailing newline), for the file `path`.

    numpy scalars/arrays, torch tensors, tuples and paths are converted to JSON types. A NaN
    or infinite float anywhere raises DataError naming its key.
    """
    plain = _jsonable(obj, "", str(path))
    text = json.dumps(plain, indent=indent, sort_keys=False, allow_nan=False, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write `obj` as JSON (see `json_bytes`) atomically; a value JSON cannot store fails before
    anything is written."""
    return atomic_write_bytes(path, json_bytes(obj, path, indent))


# --------------------------------------------------------------------------- arrays, figures


def npy_bytes(array: Any, path: str | os.PathLike) -> bytes:
    """`array` in .npy format (allow_pickle=False), for the file `path`. torch tensors are copied to
    the CPU first."""
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
    return buf.getvalue()


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """Save `array` in .npy format (see `npy_bytes`) atomically, at exactly `path` (no ".npy" is
    appended)."""
    return atomic_write_bytes(path, npy_bytes(array, path))


def figure_bytes(fig: Any, path: str | os.PathLike, dpi: int = 150) -> bytes:
    """The matplotlib Figure `fig` rendered for the file `path`: the format follows its suffix
    (".png", ".pdf", ".svg", ...); no suffix means PNG. The figure is not closed."""
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
    return buf.getvalue()


def atomic_save_figure(path: str | os.PathLike, fig: Any, dpi: int = 150) -> Path:
    """Render the matplotlib Figure `fig` into memory (see `figure_bytes`) and write it to `path`
    atomically."""
    return atomic_write_bytes(path, figure_bytes(fig, path, dpi))


# --------------------------------------------------------------------------- folders written as a whole

_NEW, _OLD = "dfc-new", "dfc-old"  # a folder's temporaries: ".<name>.dfc-new-<random>", ".<name>.dfc-old-<random>"


def _siblings(folder: Path, kind: str) -> list[Path]:
    """The temporaries of `kind` that a write of `folder` leaves beside it while it runs."""
    prefix = f".{folder.name}.{kind}-"
    try:
        return [p for p in folder.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []


def recover_folder(folder: str | os.PathLike) -> None:
    """Clean up after a write of `folder` that was killed: a half-written new set is removed; an old
    set moved aside (a system without an atomic swap, killed between its two renames) is put back if
    the folder is missing, else removed. Afterwards `folder` holds a complete set, or nothing."""
    folder = Path(os.path.realpath(folder))
    for new in _siblings(folder, _NEW):
        shutil.rmtree(new, ignore_errors=True)
    for old in _siblings(folder, _OLD):
        if not folder.exists():
            try:
                os.rename(old, folder)
                continue
            except OSError:
                pass
        shutil.rmtree(old, ignore_errors=True)


def check_writable(folder: str | os.PathLike) -> Path:
    """Create `folder`'s parent if needed and make sure a file can be created in it, before any long
    work whose output would then be lost; an OutputError naming the place and the fix otherwise."""
    given, folder = folder, Path(os.path.realpath(folder))
    parent = ensure_out_dir(folder.parent)
    try:
        probe = tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.{_NEW}-")
        os.rmdir(probe)
    except OSError as exc:
        raise output_error(exc, given) from None
    return folder


def check_set_folder(folder: str | os.PathLike, names: Iterable[str], what: str = "dfc run") -> Path:
    """Refuse, before the work, an output folder that `replace_folder` may not replace: one holding
    anything besides files named in `names` (a folder of the user's, a training folder), or a file.
    A missing folder is fine; stale temporaries of an earlier killed write are cleaned up first."""
    given, folder = folder, check_writable(folder)
    recover_folder(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output folder {str(given)!r} already exists as a file.", None,
                          "Remove it, or choose another --out.")
    if folder.is_dir():
        names = set(names)
        others = sorted(p.name for p in folder.iterdir() if p.name not in names and not _is_temp(p.name))
        if others:
            shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
            raise OutputError(f"the output folder {str(given)!r} holds files {what} did not write ({shown}); "
                              f"{what} replaces its output folder as a whole, so that it always holds one "
                              f"complete set of outputs.", None,
                              "Choose a new folder (--out), or one an earlier run wrote.")
    return folder


def _is_temp(name: str) -> bool:
    """A temporary file of `atomic_write_bytes` (left by a killed writer)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` in one step (Linux renameat2 with RENAME_EXCHANGE). False where the
    system or its file system cannot; an OSError for any other failure."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(new: Path, folder: Path) -> None:
    """Put the complete folder `new` in the place of `folder`: one atomic exchange where the system has
    one, else two renames (old aside, new in place) that `recover_folder` completes after a crash.
    The old set is removed afterwards."""
    if not folder.exists():
        os.rename(new, folder)
        return
    if _exchange(new, folder):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old set
        return
    old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{_OLD}-"))
    try:
        os.rename(folder, old)  # replaces the empty placeholder directory
    except BaseException:
        os.rmdir(old)
        raise
    try:
        os.rename(new, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def replace_folder(folder: str | os.PathLike, files: dict[str, bytes], names: Iterable[str] = ()) -> dict[str, Path]:
    """Make `folder` hold exactly `files` (file name -> bytes), as one step: the files are written and
    fsynced into a temporary sibling folder, which is then swapped in for the old folder (see
    `_swap_in`). At every moment, and after a crash at any point, `folder` holds the complete old set
    or the complete new set. `names`: every file name a set may hold (besides those in `files`), checked
    by `check_set_folder`. On any failure the old folder is untouched and no temporary is left.
    Returns the paths of the files."""
    given = Path(folder)
    folder = check_set_folder(folder, set(names) | set(files))
    try:
        mode = folder.stat().st_mode & 0o7777
    except OSError:
        mode = 0o777 & ~_UMASK
    try:
        new = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{_NEW}-"))
    except OSError as exc:
        raise output_error(exc, given) from None
    try:
        for name, data in files.items():
            with open(new / name, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(new / name, 0o666 & ~_UMASK)
        os.chmod(new, mode)
        _fsync_dir(new)
        _swap_in(new, folder)
    except BaseException as exc:
        shutil.rmtree(new, ignore_errors=True)
        if isinstance(exc, OSError):
            raise output_error(exc, given) from None
        raise
    _fsync_dir(folder.parent)
    return {name: given / name for name in files}


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
