"""Safe file I/O (no TensorFlow): atomic writes, and .npz reads that never unpickle.

Everything darts_tf writes into a run folder or an export goes through these
two context managers: the content is written beside the target under a
temporary name and renamed over it once complete; on an error (or an
interrupt) the temporary is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from darts_tf.errors import ConfigError


def _umask() -> int:
    """The process's file-creation mask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file beside `path` (`mode` "w" or "wb"); renamed to `path` when the block ends."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file expected mode 'w' or 'wb'. Received: mode={mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
    try:
        with open(descriptor, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # the permissions open() would give, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Iterator[str]:
    """Yields a temporary folder beside `path`; it replaces `path` (and what was there) when the block ends.

    With `previous`, what was at `path` is kept there (replacing an older one) instead of deleted.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # as os.makedirs would make it, not mkdtemp's private 0700
        if os.path.exists(path):
            old = f"{tmp}.old"
            if previous is not None and os.path.exists(previous):
                os.replace(previous, old)  # the older one goes
            os.replace(path, previous if previous is not None else old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def looks_like_path(name: str) -> bool:
    """A JSON file's name (it ends in .json or names a folder), not the name of a published genotype."""
    return name.endswith(".json") or os.sep in name or (os.altsep is not None and os.altsep in name)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, read without pickle: an object array is refused, never unpickled.

    OSError (missing, unreadable) passes through; anything else wrong with the file
    (object arrays, not an .npz, damage) is a ValueError with a one-line reason.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except OSError:
        raise
    except ValueError as error:  # object arrays (need pickle) and files that are not .npz
        raise ValueError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    except Exception as error:  # zipfile.BadZipFile, EOFError, ... from a damaged file
        raise ValueError(f"a damaged or non-.npz file ({type(error).__name__})") from None


class JsonDocument:
    """`to_json` / `from_json` / `save` (atomic) / `load` for a class with `to_dict` and `from_dict`.

    `KIND` names the document in error messages (one line, naming the file).
    """

    KIND = "document"
    ERROR = ConfigError

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise cls.ERROR(f"{cls.KIND.capitalize()} JSON is not valid JSON: {error}") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the document as JSON to `path` atomically (temp file, then rename)."""
        with atomic_file(path) as handle:
            handle.write(self.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike):
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise cls.ERROR(f"Cannot read {cls.KIND} file {path!r}: {error.strerror}") from None
        try:
            return cls.from_json(text)
        except ValueError as error:
            raise cls.ERROR(f"Bad {cls.KIND} file {path!r}: {error}") from None
