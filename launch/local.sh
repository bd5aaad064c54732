#!/usr/bin/env bash
# Start N processes of `bert-jax <args>` on this machine, joined through jax.distributed on CPU
# (gloo collectives): a rehearsal of a multi-host run on one machine.
#
#   launch/local.sh -n 2 --devices-per-process 4 --dry-run -- \
#       pretrain --config configs/pretrain/bert.py:size=tiny --workdir /tmp/bert-tiny
#
# Process i runs with BERT_JAX_COORDINATOR=127.0.0.1:PORT, BERT_JAX_NUM_PROCESSES=N,
# BERT_JAX_PROCESS_ID=i, BERT_JAX_LOCAL_DEVICES=K (with --devices-per-process) and
# JAX_PLATFORMS=cpu (unless already set). Its output goes to DIR/process-i.log and, prefixed
# with [i], to this terminal. When one process fails, or on Ctrl-C / SIGTERM, every process
# gets SIGTERM (time for a preemption-style checkpoint save), then SIGKILL after --grace seconds.
set -euo pipefail

prog=${0##*/}
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"

usage() {
  cat <<EOF
usage: $prog -n N [--devices-per-process K] [--port P] [--log-dir DIR] [--grace S] [--dry-run]
          -- <bert-jax args...>

Start N local CPU processes of \`\${BERT_JAX:-bert-jax} <args>\` joined by jax.distributed.

  -n, --num-processes N     number of processes (required)
  --devices-per-process K   fake CPU devices per process (sets BERT_JAX_LOCAL_DEVICES=K)
  --port P                  coordinator port on 127.0.0.1 (default: 12355 or the next free one)
  --log-dir DIR             per-process logs DIR/process-<i>.log (default: WORKDIR/logs when
                            --workdir WORKDIR is a local path among the args, else ./launch-logs)
  --grace S                 seconds between SIGTERM and SIGKILL when stopping (default: 30)
  --dry-run                 print the commands; start nothing
  -h, --help                this message

Each process gets BERT_JAX_COORDINATOR=127.0.0.1:P, BERT_JAX_NUM_PROCESSES=N,
BERT_JAX_PROCESS_ID=<0..N-1>, JAX_PLATFORMS=cpu (unless set) and, with
--devices-per-process K, BERT_JAX_LOCAL_DEVICES=K. Exits with the first failing process's status (130/143 after
Ctrl-C/SIGTERM); a second Ctrl-C kills at once.

example:
  $prog -n 2 --devices-per-process 4 -- pretrain \\
      --config configs/pretrain/bert.py:size=tiny --workdir /tmp/bert-tiny
EOF
}

is_int() { [[ $1 =~ ^(0|[1-9][0-9]*)$ ]]; }

# ---- arguments ---------------------------------------------------------------------------
n='' devices='' port='' log_dir='' grace=30 dry_run=0
value_options=(-n --num-processes --devices-per-process --port --log-dir --grace)
set_option() {
  case $1 in
    -n | --num-processes) n=$2 ;;
    --devices-per-process) devices=$2 ;;
    --port) port=$2 ;;
    --log-dir) log_dir=$2 ;;
    --grace) grace=$2 ;;
    --dry-run) dry_run=1 ;;
    *) return 1 ;;
  esac
}
parse_options "$@"
set -- "${rest[@]}"
[[ -n $n ]] || die_usage "-n N (number of processes) is required"
if ! { is_int "$n" && ((n >= 1)); }; then die_usage "-n must be a positive integer, got '$n'"; fi
if [[ -n $devices ]] && ! { is_int "$devices" && ((devices >= 1)); }; then
  die_usage "--devices-per-process must be a positive integer, got '$devices'"
fi
if [[ -n $port ]] && ! { is_int "$port" && ((port >= 1 && port <= 65535)); }; then
  die_usage "--port must be in 1..65535, got '$port'"
fi
is_int "$grace" || die_usage "--grace must be a whole number of seconds, got '$grace'"
(($#)) || die_usage "no bert-jax arguments after -- (e.g. -- pretrain --config ...)"
if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  die "needs bash >= 5.1 (wait -n -p), this is $BASH_VERSION"
fi

bert_jax=${BERT_JAX:-bert-jax}

# Logs go next to the checkpoints when the workdir is local (a gs:// workdir is not a directory).
if [[ -z $log_dir ]]; then
  find_workdir "$@"
  if [[ -n $workdir && $workdir != *://* ]]; then log_dir=$workdir/logs; else log_dir=./launch-logs; fi
fi

# A listening port answers a connect; a free one refuses it (pure bash, no external tool).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z $port ]]; then
  for ((port = 12355; port < 12455; port++)); do
    port_in_use "$port" || break
  done
  ((port < 12455)) || die "no free port in 12355..12454; pass --port"
fi

env_vars=(
  "BERT_JAX_COORDINATOR=127.0.0.1:$port"
  "BERT_JAX_NUM_PROCESSES=$n"
  "JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}"
)
[[ -z $devices ]] || env_vars+=("BERT_JAX_LOCAL_DEVICES=$devices")

if ((dry_run)); then
  print_cmd mkdir -p "$log_dir"
  for ((i = 0; i < n; i++)); do
    echo "# process $i: output prefixed with [$i] and logged to $(quote "$log_dir/process-$i.log")"
    print_cmd env "${env_vars[@]}" "BERT_JAX_PROCESS_ID=$i" "$bert_jax" "$@"
  done
  exit 0
fi

# ---- start -------------------------------------------------------------------------------
command -v "$bert_jax" >/dev/null \
  || die "'$bert_jax' not found: activate the venv or set BERT_JAX=/path/to/bert-jax"
mkdir -p "$log_dir"
fifo_dir=$(mktemp -d "${TMPDIR:-/tmp}/bert-jax-local.XXXXXX")

pids=() prefixers=() killer='' stopping=0 first_rc=0 signal_rc=0

# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
  if [[ -n $killer ]]; then
    set +m  # no "Killed" job notice for the watchdog
    kill -KILL -- "-$killer" 2>/dev/null || true
    wait "$killer" 2>/dev/null || true
  fi
  rm -rf "$fifo_dir"
}
trap cleanup EXIT

# Copy stdin to the log (as is) and to stdout (prefixed with [i]); $1: i, $2: log file.
prefix_output() {
  local line
  {
    printf '==== %s: %(%Y-%m-%d %H:%M:%S)T: process %s of %s ====\n' "$prog" -1 "$1" "$n" >&3
    while IFS= read -r line || [[ -n $line ]]; do
      printf '%s\n' "$line" >&3
      printf '[%s] %s\n' "$1" "$line"
    done
  } 3>>"$2"
}

# SIGTERM every process group still running; SIGKILL whatever is left after the grace period.
stop_all() {
  local pid
  ((stopping)) && return 0
  stopping=1
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  (
    sleep "$grace"
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  ) &
  killer=$!
}

# shellcheck disable=SC2329  # called by the INT/TERM/HUP traps
on_signal() {  # $1: signal name, $2: its number
  local pid
  signal_rc=$((128 + $2))
  if ((stopping)); then
    echo "$prog: SIG$1 again: killing every process now" >&2
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  else
    echo "$prog: SIG$1: sending SIGTERM to every process (${grace}s to exit; again to kill now)" >&2
    stop_all
  fi
}
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP

# Job control gives each process its own process group: signals reach a process and all of its
# children, and a terminal's Ctrl-C reaches only this script, which forwards it as SIGTERM.
echo "$prog: starting $n processes (coordinator 127.0.0.1:$port, logs in $log_dir)" >&2
set -m
for ((i = 0; i < n; i++)); do
  mkfifo "$fifo_dir/$i"
  prefix_output "$i" "$log_dir/process-$i.log" <"$fifo_dir/$i" &
  prefixers+=($!)
  env "${env_vars[@]}" "BERT_JAX_PROCESS_ID=$i" "$bert_jax" "$@" >"$fifo_dir/$i" 2>&1 </dev/null &
  pids+=($!)
done

# ---- wait --------------------------------------------------------------------------------
declare -A running=()
for i in "${!pids[@]}"; do running[${pids[i]}]=$i; done
while ((${#running[@]})); do
  finished='' status=0
  # (2>/dev/null: bash's own "Killed" job notice; the lines below say it better)
  wait -n -p finished "${!running[@]}" 2>/dev/null || status=$?
  [[ -n ${finished:-} ]] || continue  # a trapped signal interrupted the wait
  i=${running[$finished]}
  unset "running[$finished]"
  if ((stopping && status == 137)); then
    echo "$prog: process $i was killed (still running ${grace}s after SIGTERM)" >&2
  fi
  if ((status != 0 && first_rc == 0 && !stopping)); then
    first_rc=$status
    echo "$prog: process $i exited with status $status; stopping the others" >&2
    stop_all
  fi
done
wait "${prefixers[@]}" || true

if ((signal_rc)); then exit "$signal_rc"; fi
exit "$first_rc"
