#!/usr/bin/env bash
# Run `bert-jax` on a Cloud TPU VM slice through a queued resource: create the slice, ship this
# checkout (or a git ref) to every host, install it, start `bert-jax <args>` on all hosts, wait,
# fetch the logs, delete the slice.
#
#   launch/tpu_vm.sh all --name bert-base --zone us-central2-b --accelerator-type v4-32 --dry-run -- \
#       pretrain --config configs/pretrain/bert.py:size=base --workdir gs://BUCKET/bert-base
#
# No BERT_JAX_* variable is set on the hosts: there `bert-jax` calls jax.distributed.initialize()
# with no arguments, which reads the slice's topology from the TPU VM metadata.
set -euo pipefail

prog=${0##*/}
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"
repo_root=$(cd "$here/.." && pwd)
# On each host, under the login user's home: src/ venv/ log pid exit-code.
remote_dir=bert-jax
remote_tarball=bert-jax-src.tgz
remote_start=bert-jax-start.sh

usage() {
  cat <<EOF
usage: $prog {create|run|wait|logs|delete|all} --name NAME --zone ZONE [options] [-- <bert-jax args...>]

Cloud TPU VM slices through queued resources (gcloud compute tpus queued-resources).

  create    request the slice and wait until it is ACTIVE (needs --accelerator-type)
  run       ship the code to every host, install it (Python venv with jax[tpu]) and start
            \`bert-jax <args>\` in the background on all hosts; log in ~/$remote_dir/log
  wait      poll the hosts until bert-jax has exited on all of them; fails if any failed
  logs      copy each host's log to --log-dir as <worker>.log
  delete    delete the queued resource and its slice
  all       create, run, wait, logs, delete (delete and logs run even when a step fails)

  --name NAME                queued resource and TPU VM name (required)
  --zone ZONE                e.g. us-central2-b (required)
  --accelerator-type TYPE    e.g. v4-32, v5p-64, v5litepod-16, v6e-16 (create, all)
  --runtime-version V        TPU software version (default: from the accelerator type:
                             v4 tpu-ubuntu2204-base, v5p v2-alpha-tpuv5,
                             v5litepod v2-alpha-tpuv5-lite, v6e v2-alpha-tpuv6e)
  --project P                Google Cloud project (default: gcloud's configured project)
  --spot                     ask for Spot capacity (cheaper, preemptible)
  --repo URL [--ref REF]     install from a git clone on each host instead of copying this
                             checkout (git ls-files: tracked and non-ignored files)
  --python VERSION           Python for the hosts' venv, fetched by uv (default: 3.11)
  --log-dir DIR              where \`logs\` writes (default: ./tpu-logs/NAME)
  --poll SECONDS             polling interval of create and wait (default: 60)
  --dry-run                  print the commands; run nothing
  -h, --help                 this message

Multi-host SSH needs your key in an agent first: ssh-add ~/.ssh/google_compute_engine

example:
  $prog all --name bert-base --zone us-central2-b --accelerator-type v4-32 --dry-run -- \\
      pretrain --config configs/pretrain/bert.py:size=base --workdir gs://BUCKET/bert-base
EOF
}

# ---- arguments ---------------------------------------------------------------------------
(($#)) || die_usage "missing the action: create, run, wait, logs, delete or all"
case $1 in
  -h | --help) usage; exit 0 ;;
  create | run | wait | logs | delete | all) action=$1; shift ;;
  *) die_usage "unknown action '$1': choose create, run, wait, logs, delete or all" ;;
esac

name='' zone='' accelerator='' runtime='' project='' spot=0 repo='' ref='' python=3.11
log_dir='' poll=60 dry_run=0
value_options=(--name --zone --accelerator-type --runtime-version --project --repo --ref --python
  --log-dir --poll)
set_option() {
  case $1 in
    --name) name=$2 ;;
    --zone) zone=$2 ;;
    --accelerator-type) accelerator=$2 ;;
    --runtime-version) runtime=$2 ;;
    --project) project=$2 ;;
    --repo) repo=$2 ;;
    --ref) ref=$2 ;;
    --python) python=$2 ;;
    --log-dir) log_dir=$2 ;;
    --poll) poll=$2 ;;
    --spot) spot=1 ;;
    --dry-run) dry_run=1 ;;
    *) return 1 ;;
  esac
}
parse_options "$@"
bert_jax_args=("${rest[@]}")

[[ -n $name ]] || die_usage "--name is required"
[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die_usage "--name must be lower-case letters, digits and dashes, got '$name'"
[[ -n $zone ]] || die_usage "--zone is required"
[[ $poll =~ ^[0-9]*\.?[0-9]+$ && ! $poll =~ ^[0.]+$ ]] \
  || die_usage "--poll must be a positive number of seconds, got '$poll'"
[[ -z $ref || -n $repo ]] || die_usage "--ref needs --repo"
if [[ $action == create || $action == all ]]; then
  [[ -n $accelerator ]] || die_usage "$action needs --accelerator-type (e.g. v4-32)"
  if [[ -z $runtime ]]; then
    case $accelerator in
      v4-*) runtime=tpu-ubuntu2204-base ;;
      v5p-*) runtime=v2-alpha-tpuv5 ;;
      v5litepod-* | v5e-*) runtime=v2-alpha-tpuv5-lite ;;
      v6e-*) runtime=v2-alpha-tpuv6e ;;
      *) die_usage "no default --runtime-version for accelerator type '$accelerator'; pass one" ;;
    esac
  fi
fi
if [[ $action == run || $action == all ]]; then
  ((${#bert_jax_args[@]})) || die_usage "$action needs bert-jax arguments after -- (e.g. -- pretrain ...)"
fi
log_dir=${log_dir:-./tpu-logs/$name}

gcloud_flags=("--zone=$zone")
[[ -z $project ]] || gcloud_flags+=("--project=$project")
qr=(gcloud compute tpus queued-resources)
tpu_ssh=(gcloud compute tpus tpu-vm ssh "$name" "${gcloud_flags[@]}" --worker=all)

# ---- create ------------------------------------------------------------------------------
create() {
  local flags=(--node-id="$name" "${gcloud_flags[@]}" --accelerator-type="$accelerator"
    --runtime-version="$runtime")
  ((spot)) && flags+=(--spot)
  run "${qr[@]}" create "$name" "${flags[@]}" || return 1

  local describe=("${qr[@]}" describe "$name" "${gcloud_flags[@]}" --format='value(state.state)')
  if ((dry_run)); then
    run "${describe[@]}"
    echo "# (repeated every ${poll}s until the state is ACTIVE)"
    return 0
  fi
  local state='' last=''
  while :; do
    state=$("${describe[@]}") || state=UNKNOWN
    [[ $state == "$last" ]] || echo "$prog: queued resource $name: $state" >&2
    last=$state
    case $state in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED | SUSPENDING)
        echo "$prog: queued resource $name is $state (see: ${qr[*]} describe $name --zone=$zone)" >&2
        return 1 ;;
    esac
    sleep "$poll"
  done
}

# ---- run ---------------------------------------------------------------------------------
# The script each host runs: fetch the code, install it in a venv, start bert-jax detached.
remote_start_script() {
  local jax_pin='' line fetch
  # jax[tpu] at the version setup.cfg pins, so that pip picks the matching libtpu.
  if [[ -f $repo_root/setup.cfg ]]; then
    while IFS= read -r line; do
      [[ $line =~ ^[[:space:]]*jax==([^[:space:]]+) ]] && jax_pin="==${BASH_REMATCH[1]}"
    done <"$repo_root/setup.cfg"
  fi
  if [[ -n $repo ]]; then
    fetch="rm -rf \$d/src && git clone --quiet $(quote "$repo") \$d/src"
    [[ -z $ref ]] || fetch+=" && git -C \$d/src checkout --quiet $(quote "$ref")"
  else
    fetch="rm -rf \$d/src && mkdir -p \$d/src && tar -xzf $remote_tarball -C \$d/src"
  fi
  cat <<EOF
set -eu
cd
d=$remote_dir
mkdir -p \$d
if [ -f \$d/pid ] && grep -qs bert-jax "/proc/\$(cat \$d/pid)/cmdline"; then
  echo "bert-jax is still running on \$(hostname) (pid \$(cat \$d/pid)); not starting another" >&2
  exit 1
fi
$fetch
export PATH="\$HOME/.local/bin:\$PATH"
command -v uv >/dev/null || python3 -m pip install --user --quiet uv
[ -x \$d/venv/bin/python ] || uv venv --quiet --python $(quote "$python") \$d/venv
uv pip install --quiet --python \$d/venv/bin/python -e \$d/src $(quote "jax[tpu]$jax_pin")
rm -f \$d/exit-code \$d/exit-code.tmp
setsid nohup sh -c '"\$@"; echo \$? > \$0/exit-code.tmp; mv \$0/exit-code.tmp \$0/exit-code' \$d \\
  \$d/venv/bin/bert-jax $(join_quoted "${bert_jax_args[@]}") >\$d/log 2>&1 </dev/null &
echo \$! > \$d/pid
echo "bert-jax started on \$(hostname): log ~/\$d/log"
EOF
}

start() {
  local workdir
  find_workdir "${bert_jax_args[@]}"
  if [[ -n $workdir && $workdir != gs://* ]]; then
    echo "$prog: warning: --workdir $workdir is not a gs:// path: every host would write its own" \
      "local copy, and a multi-host checkpoint needs one shared directory" >&2
  fi

  # The start script and the code travel as files, so that the bert-jax arguments are quoted
  # once, in the script, rather than once more for every shell between here and the hosts.
  local staging=${TMPDIR:-/tmp}/bert-jax-$name
  local files=("$staging/$remote_start")
  run mkdir -p "$staging" || return 1
  if ((dry_run)); then
    printf "+ cat > %s <<'EOF'\n" "$(quote "$staging/$remote_start")"
    remote_start_script
    echo EOF
  else
    remote_start_script >"$staging/$remote_start" || return 1
  fi
  if [[ -z $repo ]]; then
    files+=("$staging/$remote_tarball")
    local list=(git -C "$repo_root" ls-files -z --cached --others --exclude-standard)
    local pack=(tar -C "$repo_root" --exclude=launch-logs --exclude=tpu-logs --null -T - -czf
      "$staging/$remote_tarball")
    printf '+ %s | %s\n' "$(join_quoted "${list[@]}")" "$(join_quoted "${pack[@]}")" >&"$((dry_run ? 1 : 2))"
    if ((!dry_run)); then
      "${list[@]}" | "${pack[@]}" || return 1
    fi
  fi
  run gcloud compute tpus tpu-vm scp "${files[@]}" "$name:" "${gcloud_flags[@]}" --worker=all || return 1
  run "${tpu_ssh[@]}" --command="sh $remote_start"
}

# ---- wait --------------------------------------------------------------------------------
wait_all() {
  local status_cmd out failures=0
  status_cmd="d=$remote_dir; h=\$(hostname);"
  status_cmd+=" if [ -f \$d/pid ] && grep -qs bert-jax \"/proc/\$(cat \$d/pid)/cmdline\"; then echo \"bert-jax-status \$h running\";"
  status_cmd+=" elif [ -f \$d/exit-code ]; then echo \"bert-jax-status \$h exit=\$(cat \$d/exit-code)\";"
  status_cmd+=" else echo \"bert-jax-status \$h lost\"; fi"
  local poll_cmd=("${tpu_ssh[@]}" --command="$status_cmd")
  if ((dry_run)); then
    run "${poll_cmd[@]}"
    echo "# (repeated every ${poll}s until no host reports running)"
    return 0
  fi
  while :; do
    if out=$("${poll_cmd[@]}" 2>&1) && [[ $out == *bert-jax-status* ]]; then
      out=${out//$'\r'/}
      failures=0
      if [[ $out != *"bert-jax-status "*" running"* ]]; then
        grep 'bert-jax-status' <<<"$out" >&2 || true
        if grep 'bert-jax-status' <<<"$out" | grep -qv 'exit=0$'; then
          echo "$prog: bert-jax failed on at least one host (see: $prog logs --name $name --zone $zone)" >&2
          return 1
        fi
        echo "$prog: bert-jax finished on every host" >&2
        return 0
      fi
    else
      failures=$((failures + 1))
      echo "$prog: could not poll the hosts ($failures in a row): ${out##*$'\n'}" >&2
      ((failures < 10)) || { echo "$prog: giving up on $name" >&2; return 1; }
    fi
    sleep "$poll"
  done
}

# ---- logs, delete ------------------------------------------------------------------------
logs() {
  run mkdir -p "$log_dir" || return 1
  run "${tpu_ssh[@]}" --command="cat $remote_dir/log" --output-directory="$log_dir" || return 1
  ((dry_run)) || echo "$prog: logs in $log_dir/<worker>.log" >&2
}

delete() {
  run "${qr[@]}" delete "$name" "${gcloud_flags[@]}" --force --quiet
}

# ---- main --------------------------------------------------------------------------------
case $action in
  create) create ;;
  run) start ;;
  wait) wait_all ;;
  logs) logs ;;
  delete) delete ;;
  all)
    # A TPU slice costs money every hour: whatever fails after the request, delete it.
    # (Each step returns non-zero on failure itself: set -e is off inside `if` and `||`.)
    rc=0
    trap 'echo "$prog: interrupted; $name may still exist: $prog delete --name $name --zone $zone" >&2; exit 130' INT
    if create && start; then
      wait_all || rc=1
      logs || rc=1
    else
      rc=1
    fi
    delete || rc=1
    exit "$rc"
    ;;
esac
