"""Checkpointing on 8 fake CPU devices: bitwise round trips, resharding restores, keep-N and
intervals, integrity fingerprints against a flipped byte on disk, refusals (non-finite state,
a different model), and interrupted saves."""

import os

# 8 fake CPU devices. Both switches only work before the JAX backend starts; if another
# module started it first with fewer devices, the tests below skip (see `mesh`).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["XLA_FLAGS"] = flags.strip()

import jax  # noqa: E402

try:
    jax.config.update("jax_num_cpu_devices", 8)
except RuntimeError:  # backend already initialised by an earlier test module
    pass

import shutil  # noqa: E402
import time  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from bert_jax.errors import UserError  # noqa: E402
from bert_jax.training.checkpointing import Checkpointer, DamagedCheckpoint  # noqa: E402


@pytest.fixture
def mesh():
    # Checked here, not at import, so collecting this module does not start the backend.
    if jax.device_count() < 8:
        pytest.skip(
            f"needs 8 devices, found {jax.device_count()}: the JAX backend started before this "
            "module could ask for 8 fake CPU devices (set jax_num_cpu_devices=8 in conftest.py)"
        )
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))


def _put(x, mesh, *spec):
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


def _state(mesh):
    rng = np.random.default_rng(0)
    return {
        "params": {
            "kernel": _put(rng.standard_normal((16, 8)).astype(np.float32), mesh, "fsdp", "tensor"),
            "bias": _put(jnp.asarray(rng.standard_normal(8), jnp.bfloat16), mesh, "data"),
            "ids": _put(rng.integers(-9, 9, (4, 4), dtype=np.int32), mesh, None, "tensor"),
        },
        "rng": _put(np.array([123, 0xFFFFFFFF], np.uint32), mesh),
        "step": _put(np.int32(7), mesh),
    }


def _abstract(state, sharding_for):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_for(p, x)), state
    )


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


EXTRA = {
    "data": {"epoch": 1, "index": 4096},
    "config": {"model": "bert", "lr": 1e-4, "tags": ["a", "b"]},
    "metrics": {"loss": 2.5},
    "ok": True,
    "none": None,
}


def test_round_trip_is_bitwise(tmp_path, mesh):
    state = _state(mesh)
    ckpt = Checkpointer(str(tmp_path), save_every=10)
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    assert ckpt.save(10, state, EXTRA)
    ckpt.wait()
    assert ckpt.latest_step() == 10 and os.path.isdir(tmp_path / "checkpoints" / "10")
    ckpt.close()

    ckpt = Checkpointer(str(tmp_path), save_every=10)  # a fresh process after a restart
    assert ckpt.read_extra() == EXTRA
    restored, extra = ckpt.restore(None, _abstract(state, lambda p, x: x.sharding))
    assert extra == EXTRA
    for (path, want), got in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(restored), strict=True
    ):
        assert _same_bits(got, want), jax.tree_util.keystr(path)
        assert got.sharding == want.sharding, jax.tree_util.keystr(path)
    ckpt.close()


def test_restore_onto_other_meshes(tmp_path, mesh):
    state = _state(mesh)
    with Checkpointer(str(tmp_path), save_every=1) as ckpt:
        ckpt.save(1, state, {"k": 1})
        ckpt.wait()
        devices = jax.devices()
        mesh4 = Mesh(np.array(devices[:4]), ("data",))
        mesh22 = Mesh(np.array(devices[4:8]).reshape(2, 2), ("fsdp", "tensor"))
        # Per leaf: a spec on the 4-device mesh and a (different) one on the 2x2 mesh.
        specs4 = {"kernel": P("data"), "bias": P("data"), "ids": P(None, "data"), "rng": P(), "step": P()}
        specs22 = {
            "kernel": P("tensor", "fsdp"),
            "bias": P(("fsdp", "tensor")),
            "ids": P("fsdp"),
            "rng": P("tensor"),
            "step": P(),
        }
        targets = {
            "1 device": lambda p, x: SingleDeviceSharding(devices[3]),
            "4 devices": lambda p, x: NamedSharding(mesh4, specs4[p[-1].key]),
            "2x2 mesh": lambda p, x: NamedSharding(mesh22, specs22[p[-1].key]),
        }
        for label, sharding_for in targets.items():
            abstract = _abstract(state, sharding_for)
            restored, extra = ckpt.restore(1, abstract)
            assert extra == {"k": 1}
            for want, got, target in zip(
                jax.tree.leaves(state), jax.tree.leaves(restored), jax.tree.leaves(abstract), strict=True
            ):
                assert _same_bits(got, want), label
                assert got.sharding == target.sharding, label


def test_keep_interval_force_and_latest(tmp_path, mesh):
    state = {"w": _put(np.ones((8, 8), np.float32), mesh, "fsdp")}
    ckpt = Checkpointer(str(tmp_path), save_every=2, keep=2)
    saved = []
    for step in range(1, 8):
        if ckpt.save(step, state, {"step": step}):
            saved.append(step)
        # An async save is in flight here; latest_step may lag but never names an unfinished one.
        latest = ckpt.latest_step()
        assert latest is None or os.path.isdir(tmp_path / "checkpoints" / str(latest))
    assert saved == [2, 4, 6]
    assert ckpt.should_save(8) and not ckpt.should_save(9)
    assert ckpt.save(7, state, {"step": 7}, force=True)  # off-interval, e.g. at the end of training
    with pytest.raises(UserError, match="step 6 already exists"):
        ckpt.save(6, state, {}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7
    ckpt.close()
    on_disk = sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit())
    assert on_disk == [6, 7]
    with Checkpointer(str(tmp_path), save_every=2, keep=2, async_save=False) as ckpt:
        assert ckpt.all_steps() == [6, 7] and ckpt.read_extra(6) == {"step": 6}
        with pytest.raises(UserError, match=r"step 4 .*available steps: \[6, 7\]"):
            ckpt.read_extra(4)


def test_flipped_byte_is_caught(tmp_path, mesh):
    # Random uint32 words do not compress, so zstd stores each chunk raw and the bytes of the
    # array appear verbatim in an OCDBT data file: the flip lands in the payload for certain.
    words = np.random.default_rng(1).integers(0, 2**32, (64, 64), dtype=np.uint32)
    state = {"rng": _put(words, mesh, "fsdp", "tensor"), "w": _put(np.ones((8, 8), np.float32), mesh)}
    with Checkpointer(str(tmp_path), save_every=1) as ckpt:
        ckpt.save(3, state, {"k": 1})
    step_dir = tmp_path / "checkpoints" / "3"
    needle = words[5, :4].tobytes()  # 16 bytes inside one 32x32 chunk row
    hits = [
        (f, data.find(needle))
        for f in step_dir.rglob("*")
        if f.is_file()
        for data in [f.read_bytes()]
        if needle in data
    ]
    assert len(hits) == 1, hits
    path, offset = hits[0]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # lowest bit of words[5, 0]
    path.write_bytes(bytes(data))

    with Checkpointer(str(tmp_path), save_every=1) as ckpt:
        assert ckpt.read_extra(3) == {"k": 1}
        abstract = _abstract(state, lambda p, x: x.sharding)
        # This message is raised only after Orbax restored the arrays without complaint.
        with pytest.raises(UserError, match="do not match the fingerprints") as err:
            ckpt.restore(3, abstract)
        message = str(err.value)
        assert str(step_dir) in message and "rng" in message and "w," not in message


def _damage_cases():
    def truncate(step_dir):
        data = max(
            (f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"),
            key=lambda f: f.stat().st_size,
        )
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    def remove_data(step_dir):
        for f in step_dir.rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.unlink()

    def remove_metadata(step_dir):
        (step_dir / "state" / "_METADATA").unlink()

    def edit_json(step_dir):
        meta = next(f for f in (step_dir / "extra").iterdir() if f.name != "commit_success.txt")
        meta.write_text(meta.read_text().replace('"step": 2', '"step": 3'))

    return {
        "truncated data file": (truncate, "state"),
        "missing data files": (remove_data, "state"),
        "deleted _METADATA": (remove_metadata, "_METADATA"),
        "edited JSON item": (edit_json, "does not match the digest"),
    }


@pytest.mark.parametrize("case", sorted(_damage_cases()))
def test_damaged_step_is_one_line_naming_it(tmp_path, mesh, case):
    damage, what = _damage_cases()[case]
    words = np.random.default_rng(1).integers(0, 2**32, (64, 64), dtype=np.uint32)
    state = {"rng": _put(words, mesh, "fsdp", "tensor"), "w": _put(np.ones((8, 8), np.float32), mesh)}
    with Checkpointer(str(tmp_path), save_every=1) as ckpt:
        ckpt.save(2, state, {"data_state": {"step": 2}})
    damage(tmp_path / "checkpoints" / "2")
    with Checkpointer(str(tmp_path), read_only=True) as ckpt:
        with pytest.raises(DamagedCheckpoint) as err:
            ckpt.read_extra(2)
            ckpt.restore(2, _abstract(state, lambda p, x: x.sharding))
    message = str(err.value)
    assert err.value.step == 2 and "\n" not in message, message
    assert message.startswith(f"checkpoint step 2 ({tmp_path / 'checkpoints' / '2'}) is damaged: ")
    assert what in message and "different model" not in message, message


def test_non_finite_state_is_refused(tmp_path, mesh):
    w = np.ones((8, 8), np.float32)
    w[3, 5] = np.nan
    state = {
        "w": _put(w, mesh, "fsdp", "tensor"),
        "b": _put(jnp.array([1, jnp.inf], jnp.bfloat16), mesh),
        "ok": _put(np.zeros(4, np.float32), mesh),
    }
    with Checkpointer(str(tmp_path), save_every=1, async_save=False) as ckpt:
        with pytest.raises(UserError, match=r"refusing to save step 4 .*non-finite values in b, w$"):
            ckpt.save(4, state, {}, force=True)
        assert ckpt.all_steps() == []
    assert [n for n in os.listdir(tmp_path / "checkpoints") if n[0].isdigit()] == []


def test_different_model_is_listed(tmp_path, mesh):
    params = {"a": _put(np.ones((8, 8), np.float32), mesh), "b": _put(np.ones(4, np.float32), mesh)}
    state = {"params": params, "step": _put(np.int32(1), mesh)}
    with Checkpointer(str(tmp_path), save_every=1) as ckpt:
        ckpt.save(1, state, {})
        ckpt.wait()
        repl = NamedSharding(mesh, P())
        other = {
            "params": {
                "a": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=repl),
                "c": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=repl),
            },
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
        }
        with pytest.raises(UserError) as err:
            ckpt.restore(1, other)
    message = str(err.value)
    assert str(tmp_path / "checkpoints" / "1") in message
    assert "missing from the checkpoint: params/c" in message
    assert "in the checkpoint but not expected: params/b" in message
    assert "params/a (saved (8, 8) float32 vs expected (8, 4) float32)" in message


def test_interrupted_save_is_ignored(tmp_path, mesh):
    state = {"w": _put(np.ones((8, 8), np.float32), mesh, "fsdp")}
    with Checkpointer(str(tmp_path), save_every=2) as ckpt:
        ckpt.save(2, state, {"step": 2})
    root = tmp_path / "checkpoints"
    # What a process killed mid-save leaves behind: all files written, never renamed into place.
    shutil.copytree(root / "2", root / "4.orbax-checkpoint-tmp")
    with Checkpointer(str(tmp_path), save_every=2) as ckpt:
        assert ckpt.all_steps() == [2] and ckpt.latest_step() == 2
        assert ckpt.read_extra() == {"step": 2}
        assert ckpt.save(4, state, {"step": 4})  # the same step again, cleanly
        ckpt.wait()
        assert ckpt.latest_step() == 4 and ckpt.read_extra() == {"step": 4}
    assert sorted(os.listdir(root)) == ["2", "4"]


def _tree(root):
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")
    )


def test_reader_leaves_a_live_async_save_intact(tmp_path, mesh):
    """A reader (encode / export / evaluate / --init) opened while the run is mid-way through an
    async save neither deletes its tmp directory nor writes anything; the save then finishes."""
    small = {"w": _put(np.ones((8, 8), np.float32), mesh, "fsdp")}
    writer = Checkpointer(str(tmp_path), save_every=2)
    writer.save(2, small, {"step": 2})
    writer.wait()
    big = {
        "w": _put(np.random.default_rng(0).standard_normal((8, 4096, 4096)).astype(np.float32), mesh, "fsdp")
    }  # 512 MB of incompressible data: the save takes a while
    assert writer.save(4, big, {"step": 4})
    root = tmp_path / "checkpoints"
    assert writer._manager.is_saving_in_progress()

    def in_flight():
        return any(".orbax-checkpoint-tmp" in p.name for p in root.iterdir())

    # Orbax may create the save's tmp directory from its background thread, a moment later.
    deadline = time.monotonic() + 30
    while not in_flight() and writer._manager.is_saving_in_progress() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert in_flight()
    with Checkpointer(str(tmp_path), read_only=True) as reader:
        assert reader.latest_step() == 2
        restored, extra = reader.restore(None, _abstract(small, lambda p, x: x.sharding))
        assert extra == {"step": 2} and _same_bits(restored["w"], small["w"])
        still_saving = writer._manager.is_saving_in_progress()
    writer.wait()
    assert still_saving, "the save finished before the reader was done: make the state bigger"
    assert writer.latest_step() == 4
    restored, _ = writer.restore(4, _abstract(big, lambda p, x: x.sharding))
    assert _same_bits(restored["w"], big["w"])
    writer.close()


def test_reader_writes_nothing(tmp_path, mesh):
    state = {"w": _put(np.ones((8, 8), np.float32), mesh, "fsdp")}
    with Checkpointer(str(tmp_path), save_every=2) as ckpt:
        ckpt.save(2, state, {"step": 2})
    root = tmp_path / "checkpoints"
    shutil.copytree(root / "2", root / "4.orbax-checkpoint-tmp-123")  # a save in flight
    before = _tree(tmp_path)
    with Checkpointer(str(tmp_path), read_only=True) as ckpt:
        assert ckpt.all_steps() == [2] and ckpt.read_extra() == {"step": 2}
    assert _tree(tmp_path) == before
    # A path that does not exist, or a directory without checkpoints/, is an error and stays so.
    for missing in (tmp_path / "typo", tmp_path / "checkpoints" / "2"):
        with pytest.raises(UserError, match="expected a workdir written by bert-jax"):
            Checkpointer(str(missing), read_only=True)
    assert not (tmp_path / "typo").exists() and _tree(tmp_path) == before


# Two processes x 4 CPU devices (gloo collectives), one 8-device mesh spanning both: every
# process calls save/restore; arrays are not fully addressable anywhere.
_WORKER = """
import sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
import jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from bert_jax.errors import UserError
from bert_jax.training.checkpointing import Checkpointer

mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
full = np.arange(16 * 8, dtype=np.float32).reshape(16, 8) / 3
def put(arr, *spec):
    return jax.make_array_from_callback(arr.shape, NamedSharding(mesh, P(*spec)), lambda i: arr[i])
state = {"w": put(full, "fsdp", "tensor"), "k": put(np.arange(4, dtype=np.uint32))}
ckpt = Checkpointer(workdir, save_every=1)
assert ckpt.save(1, state, {"p": 1})
ckpt.wait()
mesh2 = Mesh(np.array(jax.devices()).reshape(4, 2), ("a", "b"))
abstract = {"w": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=NamedSharding(mesh2, P("b", "a"))),
            "k": jax.ShapeDtypeStruct((4,), jnp.uint32, sharding=NamedSharding(mesh2, P("a")))}
restored, extra = ckpt.restore(None, abstract)
assert extra == {"p": 1} and restored["w"].sharding == abstract["w"].sharding
for shard in restored["w"].addressable_shards:
    assert np.array_equal(np.asarray(shard.data), full[shard.index])
bad = full.copy()
bad[0, 0] = np.nan
try:
    ckpt.save(2, {"w": put(bad, "fsdp", "tensor"), "k": state["k"]}, {})
    raise SystemExit("non-finite state was saved")
except UserError:
    pass
assert ckpt.all_steps() == [1]
ckpt.close()
jax.distributed.shutdown()
print("WORKER OK", pid)
"""


def test_two_processes_share_one_mesh(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(pid), port, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for pid, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0 and f"WORKER OK {pid}" in out, out[-3000:]


def test_one_process_saves_without_per_device_slice_programs(mesh, tmp_path, caplog):
    """With one process every replica is local: Orbax's replica-parallel save would only
    compile a slice program per device and array shape at the first save (about 8 s for
    bert-tiny on 8 CPU devices). A replicated array of a shape no other test uses is saved
    with no slice compiled, and reads back bit for bit."""
    import logging

    x = np.arange(24 * 40, dtype=np.float32).reshape(24, 40)  # 24 rows: splittable over 8 replicas
    state = {"replicated": _put(x, mesh)}
    caplog.set_level(logging.WARNING)
    with jax.log_compiles(True), Checkpointer(str(tmp_path), keep=1) as ckpt:
        assert ckpt.save(1, state, {})
        ckpt.wait()
        compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling")]
        assert not [m for m in compiled if "slice" in m.split(" with ")[0]], compiled
        restored, _ = ckpt.restore(1, _abstract(state, lambda p, x: x.sharding))
    np.testing.assert_array_equal(np.asarray(restored["replicated"]), x)
