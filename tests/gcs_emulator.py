"""A local Cloud Storage emulator (gcp-storage-emulator) on 127.0.0.1 for `gs://` tests.

`emulator()` starts it as a child process on a free port and returns the environment that points
every client bert_jax uses at it: gcsfs / google-cloud-storage (`STORAGE_EMULATOR_HOST`), Orbax's
TensorStore (`TENSORSTORE_GCS_HTTP_URL`) and ArrayRecord's reader
(`CLOUD_STORAGE_EMULATOR_ENDPOINT`). TensorFlow's own GCS client (tf.io.gfile) has no endpoint
setting and cannot reach it; bert_jax does not use it for user paths.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

from ports import free_port

BUCKET = "bert-jax-test"


def client_env(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "TENSORSTORE_GCS_HTTP_VERSION": "1.1",
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
        "EPATH_USE_TF": "false",
        "FSSPEC_GCS_TOKEN": "anon",
        "FSSPEC_GCS_USE_LISTINGS_CACHE": "false",
        # Recent gcsfs probes each bucket over gRPC for its type first (a 60 s timeout here).
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GOOGLE_CLOUD_PROJECT": "test",
    }


# The emulator leaves out the `x-goog-generation` header that Cloud Storage sends with every
# object download; TensorStore (Orbax's OCDBT manifest reads) needs it ("Malformed
# StorageGeneration" otherwise). Run it with that header added.
_SERVER = """
import sys
from gcp_storage_emulator import server
from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.handlers import objects

plain = objects.download

def download(request, response, storage, *args, **kwargs):
    plain(request, response, storage, *args, **kwargs)
    if response.status.value in (200, 206):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:
            return
        response["x-goog-generation"] = str(obj.get("generation", "1"))
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

objects.download = download
for _, handlers in server.HANDLERS:
    for method, fn in list(handlers.items()):
        if fn is plain:
            handlers[method] = download
main(sys.argv[1:])
"""


@contextlib.contextmanager
def emulator():
    """Run the emulator for the length of a `with` block; yields the client environment."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SERVER,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            BUCKET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the GCS emulator did not start (exit {proc.poll()})")
            time.sleep(0.1)
        yield client_env(port)
    finally:
        proc.kill()
        proc.wait()


def patch_gcsfs_for_emulator() -> None:
    """The emulator does not implement objects.moveTo, which gcsfs tries first for a rename and
    retries for ~30 s before falling back to copy + delete; go straight to copy + delete."""
    import fsspec.asyn
    import gcsfs.core

    gcsfs.core.GCSFileSystem._mv_file = fsspec.asyn.AsyncFileSystem._mv_file
