"""Where `bert-jax encode` writes, as it goes: one .npy file, or a directory of .npy shards.

- `Npy` (an output named *.npy): rows are appended to a temporary file beside the target (for a
  gs:// target, a local one), whose header is written last, when the row count is known; the
  file is then renamed (or uploaded) into place, so the target is whole or absent.
- `Shards` (any other output: a directory): window k of the input becomes `part-0000k.npy`,
  written whole, and then the manifest records it: its first and last input line, its rows,
  and the lines skipped as bad with their problem. A rerun with the same settings skips the
  windows the manifest holds, so an interrupted run resumes after its last finished shard.
  With several processes (`jax.distributed`), each writes the windows it owns and its own
  manifest (`manifest-P-of-N.json`); together they hold every window once.

`load(directory)` reads a shard directory back as one array, checking that no window is missing.
"""

from __future__ import annotations

import struct

import numpy as np

from bert_jax import storage
from bert_jax.errors import UserError

HEADER_BYTES = 128  # our .npy header, fixed-size so it can be written after the rows


def npy_header(shape: tuple[int, ...], dtype=np.float32) -> bytes:
    """A version 1.0 .npy header of exactly HEADER_BYTES (numpy reads any space padding)."""
    body = f"{{'descr': {np.dtype(dtype).str!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = body.ljust(HEADER_BYTES - 10 - 1) + "\n"
    if len(body) != HEADER_BYTES - 10:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class Npy:
    """One .npy of float32 rows of `row_shape`, written as it goes and landing whole."""

    def __init__(self, path: str, row_shape: tuple[int, ...]):
        self.path = path
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._landing = storage.Landing(path)
        self._landing.file.write(npy_header((0, *self.row_shape)))

    def finished(self, index: int) -> bool:
        return False

    def write(self, index: int, values: np.ndarray, meta: dict) -> None:
        assert values.shape[1:] == self.row_shape and values.dtype == np.float32
        self._landing.file.write(np.ascontiguousarray(values).tobytes())
        self.rows += len(values)

    def close(self) -> None:
        self._landing.file.seek(0)
        self._landing.file.write(npy_header((self.rows, *self.row_shape)))
        self._landing.commit()

    def abort(self) -> None:
        self._landing.abort()


class Shards:
    """A directory of part-K.npy shards and this process's manifest (see the module docstring)."""

    def __init__(self, directory: str, settings: dict, process: int = 0, processes: int = 1):
        self.directory = directory
        name = "manifest.json" if processes == 1 else f"manifest-{process}-of-{processes}.json"
        self.manifest_path = storage.join(directory, name)
        self.manifest = {"settings": settings, "shards": []}
        if storage.exists(directory) and not storage.isdir(directory):
            raise UserError(
                f"--output {directory} is a file; give a directory for shards, or a name ending in .npy"
            )
        if storage.exists(self.manifest_path):
            found = storage.read_json(self.manifest_path)
            if found.get("settings") != settings:
                old = found.get("settings") or {}
                changed = [
                    f"{k}: {old.get(k)!r} then, {v!r} now" for k, v in settings.items() if old.get(k) != v
                ]
                raise UserError(
                    f"{self.manifest_path} was written with other settings ({'; '.join(changed)}); "
                    "resume with the same settings, or choose a new --output directory"
                )
            self.manifest = found
        else:
            held = storage.listdir(directory) if storage.isdir(directory) else []
            others = [n for n in held if n.startswith(("part-", "manifest"))]
            if others:
                raise UserError(
                    f"--output {directory} holds shards of another run ({others[0]}, ...) but no "
                    f"{name}; choose an empty or new directory"
                )
            storage.makedirs(directory)
        self._done = {shard["index"] for shard in self.manifest["shards"]}
        self.resumed = len(self._done)  # shards an earlier run finished

    def finished(self, index: int) -> bool:
        return index in self._done

    def write(self, index: int, values: np.ndarray, meta: dict) -> None:
        name = f"part-{index:05d}.npy"
        data = npy_header(values.shape) + np.ascontiguousarray(values, np.float32).tobytes()
        storage.write_atomic(storage.join(self.directory, name), data)  # whole or absent
        self.manifest["shards"].append({"index": index, "file": name, "rows": len(values), **meta})
        self.manifest["shards"].sort(key=lambda s: s["index"])
        storage.write_json(self.manifest_path, self.manifest)  # the shard counts once this lands
        self._done.add(index)

    def close(self) -> None:
        self.manifest["complete"] = True
        storage.write_json(self.manifest_path, self.manifest)

    def abort(self) -> None:
        pass  # finished shards stay: a rerun resumes after them


def manifests(directory: str) -> list[dict]:
    names = sorted(n for n in storage.listdir(directory) if n.startswith("manifest") and n.endswith(".json"))
    if not names:
        raise UserError(f"{directory}: no manifest.json; not an encode output directory")
    return [storage.read_json(storage.join(directory, n)) for n in names]


def load(directory: str) -> np.ndarray:
    """The rows of every shard of a finished encode output directory, in input order."""
    shards = [s for m in manifests(directory) for s in m["shards"]]
    incomplete = [m for m in manifests(directory) if not m.get("complete")]
    if incomplete:
        raise UserError(
            f"{directory}: the run has not finished (a manifest is not complete); rerun it to resume"
        )
    shards.sort(key=lambda s: s["index"])
    indices = [s["index"] for s in shards]
    if indices != list(range(len(indices))):
        raise UserError(f"{directory}: shards {indices} do not cover windows 0..{len(indices) - 1} once each")
    parts = [np.load(storage.fetch(storage.join(directory, s["file"]))) for s in shards]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
