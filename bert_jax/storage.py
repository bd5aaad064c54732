"""The one path layer: every path a user names (workdir, data, corpus, tokenizer, export,
results) may be local or `gs://...`, and is read and written here, never with `open`/`os.path`.

Local paths go through the OS; cloud paths through `etils.epath`, which Orbax uses too. bert_jax
sets `EPATH_USE_TF=false` (unless the environment says otherwise) so that epath speaks to
Cloud Storage through gcsfs rather than TensorFlow's client: one client for every file, and one
that a local emulator can stand in for in tests (`STORAGE_EMULATOR_HOST`).

Writes are whole or absent. A local file is written to a temporary name beside its target and
renamed into place; a Cloud Storage object is uploaded in one request, which readers see whole
or not at all. Libraries that write only local files (ArrayRecord, tf.summary, SavedModel) write
locally and their callers upload the files (`copy`); libraries that read only local files read
`local_copy(path)` or `fetch(path)`.
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import io
import json
import os
import posixpath
import shutil
import tempfile

os.environ.setdefault("EPATH_USE_TF", "false")


def _directories_exist_on_gcs() -> None:
    """gcsfs's mkdir below a bucket is a no-op (GCS has no directories), so a directory is only
    seen once a file is in it. Orbax's non-primary processes wait for the primary to create
    directories (e.g. `array_metadatas/`) and would wait forever; TensorFlow's client writes a
    `dir/` placeholder object, as the Cloud console does. Make gcsfs do the same."""
    try:
        import fsspec.asyn
        import gcsfs
    except ImportError:  # no cloud storage client: local paths only
        return
    cls = gcsfs.GCSFileSystem
    if getattr(cls, "_bert_jax_placeholders", False):
        return
    makedirs = cls._makedirs

    async def _makedirs(self, path, exist_ok=False):
        await makedirs(self, path, exist_ok=exist_ok)
        bucket, key, _ = self.split_path(path)
        if key and not await self._exists(path):
            await self._pipe_file(f"{bucket}/{key.rstrip('/')}/", b"")
            self.invalidate_cache(path)

    cls._makedirs = _makedirs
    cls.makedirs = fsspec.asyn.sync_wrapper(_makedirs)
    cls._bert_jax_placeholders = True


_directories_exist_on_gcs()


def is_remote(path) -> bool:
    """A URL-style path (`gs://bucket/...`), as opposed to a local one."""
    return "://" in str(path)


def _epath(path):
    from etils import epath

    return epath.Path(str(path))


def absolute(path) -> str:
    """A local path made absolute (and `~` expanded); a cloud path unchanged."""
    path = str(path)
    return path.rstrip("/") if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def join(base, *names) -> str:
    base = str(base)
    return posixpath.join(base, *map(str, names)) if is_remote(base) else os.path.join(base, *map(str, names))


def parent(path) -> str:
    path = str(path).rstrip("/")
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def basename(path) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(str(path))


def exists(path) -> bool:
    return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path) -> bool:
    return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path) -> bool:
    return _epath(path).is_file() if is_remote(path) else os.path.isfile(path)


def listdir(path) -> list[str]:
    """Names directly inside `path`, sorted."""
    if is_remote(path):
        return sorted(name for name, _ in _remote_entries(path))
    return sorted(os.listdir(path))


def _remote_entries(path) -> list[tuple[str, bool]]:
    """(name, is a directory) of each entry of a cloud directory, leaving out the directory's
    own `dir/` placeholder object."""
    import fsspec

    scheme, key = absolute(path).split("://", 1)
    fs = fsspec.filesystem(scheme)
    if not fs.isdir(key):
        raise FileNotFoundError(f"{path}: no such directory")
    return [
        (e["name"].rstrip("/")[len(key) + 1 :], e["type"] == "directory")
        for e in fs.ls(key, detail=True)
        if e["name"].rstrip("/") != key
    ]


def makedirs(path) -> None:
    if is_remote(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def remove(path) -> None:
    """Remove a file; a missing one is not an error."""
    if is_remote(path):
        p = _epath(path)
        if p.exists():
            p.unlink()
    elif os.path.lexists(path):
        os.remove(path)


def rmtree(path) -> None:
    """Remove a directory and everything in it; a missing one is not an error."""
    if is_remote(path):
        p = _epath(path)
        if p.exists():
            p.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def glob(pattern: str) -> list[str]:
    """Paths matching `pattern` (wildcards in the last components only on cloud storage), sorted."""
    if not is_remote(pattern):
        return sorted(_glob.glob(os.path.expanduser(pattern)))
    head, tail = str(pattern), []
    while any(c in head for c in "*?["):
        head, name = posixpath.split(head)
        tail.insert(0, name)
    if not tail:
        return [pattern] if exists(pattern) else []
    return sorted(str(p) for p in _epath(head).glob("/".join(tail)))


def stat(path) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file."""
    if is_remote(path):
        st = _epath(path).stat()
        return int(st.length), int(st.mtime * 1e9)
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def open(path, mode: str = "r", encoding: str | None = None):  # noqa: A001 - the layer's open
    """A file object for reading or writing (writes to cloud storage land when it closes)."""
    if is_remote(path):
        f = _epath(path).open(mode.replace("t", "").replace("b", "") + "b")
        if "r" in mode:  # buffered, for readline(limit)
            f = io.BufferedReader(f, buffer_size=1 << 20)
        return f if "b" in mode else io.TextIOWrapper(f, encoding=encoding or "utf-8")
    if "b" in mode:
        return builtins.open(path, mode)
    return builtins.open(path, mode, encoding=encoding or "utf-8")


def read_bytes(path) -> bytes:
    if is_remote(path):
        return _epath(path).read_bytes()
    with builtins.open(path, "rb") as f:
        return f.read()


def read_text(path) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path):
    return json.loads(read_text(path))


class Landing:
    """A binary file written in pieces (`.file`, seekable) that lands at `path` whole on
    `commit()` or not at all on `abort()`. Local: a temporary file beside `path`, fsynced and
    renamed. Cloud: a local temporary file, uploaded on commit (one object write)."""

    def __init__(self, path):
        self.path = str(path)
        directory = None
        if not is_remote(path):
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=f".{basename(path)}.", suffix=".tmp")
        self.file = os.fdopen(fd, "w+b")

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if is_remote(self.path):
                with builtins.open(self._tmp, "rb") as src, _epath(self.path).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)  # the object lands when dst closes
                os.remove(self._tmp)
            else:
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def write_atomic(path, data: str | bytes) -> None:
    """Write `data` to `path` whole or not at all (local: temporary file + rename)."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    if is_remote(path):
        _epath(path).write_bytes(data)
        return
    landing = Landing(path)
    try:
        landing.file.write(data)
    except BaseException:
        landing.abort()
        raise
    landing.commit()


def write_json(path, value, indent: int = 1) -> None:
    write_atomic(path, json.dumps(value, indent=indent, default=float) + "\n")


def copy(src, dst) -> None:
    """Copy one file (either side local or cloud); the copy lands whole."""
    if not is_remote(src) and not is_remote(dst):
        if os.path.abspath(src) == os.path.abspath(dst):
            return
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        tmp = f"{dst}.tmp-{os.getpid()}"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return
    if is_remote(src) and is_remote(dst) and absolute(src) == absolute(dst):
        return
    write_atomic(dst, read_bytes(src))


def copy_tree(src, dst) -> list[str]:
    """Copy every file under `src` into `dst` (created), keeping relative paths; returns them."""
    names = []
    if is_remote(src):
        rel, todo = [], [""]
        while todo:  # one listing per directory
            sub = todo.pop()
            for entry, is_dir in _remote_entries(join(src, sub) if sub else src):
                name = posixpath.join(sub, entry) if sub else entry
                (todo if is_dir else rel).append(name)
        rel.sort()
    else:
        rel = sorted(os.path.relpath(os.path.join(d, n), src) for d, _, ns in os.walk(src) for n in ns)
    for name in rel:
        copy(join(src, name), join(dst, name))
        names.append(name)
    return names


@contextlib.contextmanager
def local_copy(path):
    """A local path with the content of file or directory `path`, for libraries that read only
    local files (SentencePiece, TensorFlow checkpoints). Local `path`: itself."""
    if not is_remote(path):
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="bert_jax-fetch-")
    try:
        target = os.path.join(tmp, basename(path))
        if isdir(path):
            copy_tree(path, target)
        else:
            copy(path, target)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_fetched: dict[str, str] = {}


def fetch(path) -> str:
    """A local path with the content of file or directory `path`, kept until the process ends
    (for readers whose results point into it, e.g. tokenizer files). Local `path`: itself."""
    if not is_remote(path):
        return str(path)
    key = absolute(path)
    if key not in _fetched:
        import atexit

        from bert_jax.errors import UserError

        if not exists(path):
            raise UserError(f"{path}: no such file or directory")
        tmp = tempfile.mkdtemp(prefix="bert_jax-fetch-")
        atexit.register(shutil.rmtree, tmp, True)
        target = os.path.join(tmp, basename(path))
        if isdir(path):
            copy_tree(path, target)
        else:
            copy(path, target)
        _fetched[key] = target
    return _fetched[key]


def inside(directory: str, name: str, what: str) -> str:
    """`directory/name` for a `name` read from a file, refused if it leads out of `directory`
    (an absolute path, `..`, or a symlink elsewhere)."""
    from bert_jax.errors import UserError

    name = str(name)
    if is_remote(directory):
        parts = name.split("/")
        if name.startswith("/") or is_remote(name) or ".." in parts or not name.strip("/."):
            raise UserError(f"{what} names {name!r}, which is not inside {directory}")
        return join(directory, name)
    base = os.path.realpath(directory)
    target = os.path.realpath(os.path.join(base, name))
    if os.path.isabs(name) or os.path.commonpath([base, target]) != base or target == base:
        raise UserError(f"{what} names {name!r}, which is not inside {directory}")
    return os.path.join(directory, name)
