#!/usr/bin/env bash
# Submit `bert-jax <args>` to a SLURM GPU cluster: launch/slurm.sbatch on N nodes, one process
# per node driving all of the node's GPUs.
#
#   launch/slurm.sh --nodes 2 --gpus-per-node 8 --partition gpu --time 24:00:00 --dry-run -- \
#       pretrain --config configs/pretrain/bert.py:size=base --workdir /shared/runs/bert-base
set -euo pipefail

prog=${0##*/}
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"
script=$(cd "$here" && pwd)/slurm.sbatch

usage() {
  cat <<EOF
usage: $prog [--nodes N] [--gpus-per-node G] [--partition P] [--time T] [--account A]
          [--job-name NAME] [--sbatch-arg ARG]... [--dry-run] -- <bert-jax args...>

Submit launch/slurm.sbatch: one bert-jax process per node, each with all of its node's GPUs,
joined by jax.distributed (coordinator: the allocation's first node).

  --nodes N            nodes, = processes (default: 1)
  --gpus-per-node G    GPUs per node (default: the partition's default)
  --partition P        SLURM partition
  --time T             time limit, e.g. 24:00:00 (SIGTERM comes 5 minutes before it: the
                       run saves a checkpoint; submit again to resume)
  --account A          account to charge
  --job-name NAME      (default: bert-jax)
  --sbatch-arg ARG     any other sbatch option, e.g. --sbatch-arg=--exclusive (repeatable)
  --dry-run            print the sbatch command and the script it submits; submit nothing
  -h, --help           this message

sbatch passes this shell's environment to the job: activate the venv first (on a filesystem
all nodes see) or set BERT_JAX=/path/to/bert-jax.

example:
  $prog --nodes 2 --gpus-per-node 8 --partition gpu --time 24:00:00 --dry-run -- \\
      pretrain --config configs/pretrain/bert.py:size=base --workdir /shared/runs/bert-base
EOF
}

# ---- arguments ---------------------------------------------------------------------------
nodes=1 gpus='' partition='' time_limit='' account='' job_name='' extra=() dry_run=0
value_options=(--nodes --gpus-per-node --partition --time --account --job-name --sbatch-arg)
set_option() {
  case $1 in
    --nodes) nodes=$2 ;;
    --gpus-per-node) gpus=$2 ;;
    --partition) partition=$2 ;;
    --time) time_limit=$2 ;;
    --account) account=$2 ;;
    --job-name) job_name=$2 ;;
    --sbatch-arg) extra+=("$2") ;;
    --dry-run) dry_run=1 ;;
    *) return 1 ;;
  esac
}
parse_options "$@"
set -- "${rest[@]}"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die_usage "--nodes must be a positive integer, got '$nodes'"
[[ -z $gpus || $gpus =~ ^[1-9][0-9]*$ ]] || die_usage "--gpus-per-node must be a positive integer, got '$gpus'"
(($#)) || die_usage "no bert-jax arguments after -- (e.g. -- pretrain --config ...)"

# Command-line options override the script's #SBATCH lines.
cmd=(sbatch "--nodes=$nodes" --ntasks-per-node=1)
[[ -z $gpus ]] || cmd+=("--gpus-per-node=$gpus")
[[ -z $partition ]] || cmd+=("--partition=$partition")
[[ -z $time_limit ]] || cmd+=("--time=$time_limit")
[[ -z $account ]] || cmd+=("--account=$account")
[[ -z $job_name ]] || cmd+=("--job-name=$job_name")
cmd+=("${extra[@]}" "$script" "$@")

if ((dry_run)); then
  print_cmd "${cmd[@]}"
  printf '# each of the %s processes (one per node) then runs:\n' "$nodes"
  printf '#   BERT_JAX_COORDINATOR=<first node>:<port> BERT_JAX_NUM_PROCESSES=%s' "$nodes"
  printf ' BERT_JAX_PROCESS_ID=<0..%s> %s' "$((nodes - 1))" "$(quote "${BERT_JAX:-bert-jax}")"
  printf ' %s' "$(join_quoted "$@")"
  printf '\n# ---- the submitted script, %s ----\n' "$script"
  printf '%s\n' "$(<"$script")"
  exit 0
fi

print_cmd "${cmd[@]}" >&2
exec "${cmd[@]}"
