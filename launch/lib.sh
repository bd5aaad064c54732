# shellcheck shell=bash
# Helpers shared by the launchers (local.sh, tpu_vm.sh, gke.sh, slurm.sh). Each sources this file
# from its own directory, after setting `prog` (its name, for messages):
#
#   prog=${0##*/}
#   here=${BASH_SOURCE[0]%/*}
#   [[ $here != "${BASH_SOURCE[0]}" ]] || here=.
#   # shellcheck source=lib.sh
#   source "$here/lib.sh"
#
# (launch/.shellcheckrc lets shellcheck follow that `source`.) slurm.sbatch does not source this
# file and stays self-contained: sbatch copies the batch script into SLURM's spool directory on
# the first node and runs that copy, where nothing lies next to it.
# shellcheck disable=SC2154  # prog and dry_run are set by the script that sources this file

die_usage() { echo "$prog: error: $* (see $prog --help)" >&2; exit 2; }
die() { echo "$prog: error: $*" >&2; exit 1; }

# Print one argument as a (POSIX) shell word, quoted only when it needs to be.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Print a list of arguments as one shell command line.
join_quoted() {
  local sep='' word
  for word in "$@"; do
    printf '%s' "$sep"
    quote "$word"
    sep=' '
  done
}

# Print a command the way a shell would read it back, prefixed with "+ ".
print_cmd() {
  printf '+ %s\n' "$(join_quoted "$@")"
}

# Run a command, or print it under --dry-run (dry_run=1); real runs echo it to stderr first.
run() {
  if ((dry_run)); then
    print_cmd "$@"
  else
    print_cmd "$@" >&2
    "$@"
  fi
}

# Set `workdir` to the value of the last --workdir (or --workdir=...) among the arguments, or ''.
# shellcheck disable=SC2034  # workdir is for the caller
find_workdir() {
  local prev='' arg
  workdir=''
  for arg in "$@"; do
    [[ $prev == --workdir ]] && workdir=$arg
    [[ $arg == --workdir=* ]] && workdir=${arg#--workdir=}
    prev=$arg
  done
}

# Parse the launcher's options, up to `--`; what follows `--` (the bert-jax arguments) goes into
# the array `rest`. The script lists the options that take a value in `value_options` and
# defines `set_option OPTION [VALUE]`, which stores one option (VALUE: for those in
# value_options) or returns 1 when OPTION is not one of its options. --opt=value is --opt value;
# -h/--help prints the script's `usage` and exits 0.
parse_options() {
  rest=()
  while (($#)); do
    case $1 in
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
      -h | --help) usage; exit 0 ;;
      --) shift; rest=("$@"); return 0 ;;
    esac
    if takes_value "$1"; then
      (($# >= 2)) || die_usage "$1 needs a value"
      set_option "$1" "$2"
      shift 2
    elif set_option "$1"; then
      shift
    else
      die_usage "unexpected argument '$1' (bert-jax arguments go after --)"
    fi
  done
}

# Whether an option is one of the script's value_options.
takes_value() {
  local opt
  for opt in "${value_options[@]}"; do
    if [[ $1 == "$opt" ]]; then return 0; fi
  done
  return 1
}
