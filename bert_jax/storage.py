"""Writing what a run leaves behind, whole or not at all.

Today: local files, each written to a temporary name beside its target and renamed into
place (`os.replace` is atomic on POSIX), so a crash or a reader never sees half a file.
This is the module where `gs://` paths will be handled too (issue #12 item 1): callers use
it rather than `open` on a user's path.
"""

from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, value, indent: int = 1) -> None:
    write_atomic(path, json.dumps(value, indent=indent, default=float) + "\n")


def inside(directory: str, name: str, what: str) -> str:
    """`directory/name` for a `name` read from a file, refused if it leads out of `directory`
    (an absolute path, `..`, or a symlink elsewhere)."""
    from bert_jax.errors import UserError

    base = os.path.realpath(directory)
    target = os.path.realpath(os.path.join(base, str(name)))
    if os.path.isabs(str(name)) or os.path.commonpath([base, target]) != base or target == base:
        raise UserError(f"{what} names {name!r}, which is not inside {directory}")
    return os.path.join(directory, str(name))
