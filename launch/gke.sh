#!/usr/bin/env bash
# Run `bert-jax` on a TPU slice in a GKE cluster: fill in launch/gke/jobset.yaml (one pod per TPU
# VM host) and hand it to kubectl.
#
#   launch/gke.sh render --name bert-base --image IMAGE --tpu-accelerator tpu-v5-lite-podslice \
#       --tpu-topology 4x4 -- pretrain --config configs/pretrain/bert.py:size=base \
#       --workdir gs://BUCKET/bert-base
#
# render needs neither kubectl nor envsubst: the substitution is plain bash.
set -euo pipefail
# Bash >= 5.2 would otherwise read '&' in a ${var//pattern/replacement} replacement as the match.
shopt -u patsub_replacement 2>/dev/null || true

prog=${0##*/}
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"
template=$here/gke/jobset.yaml

usage() {
  cat <<EOF
usage: $prog {render|apply|delete|logs} --name NAME [options] [-- <bert-jax args...>]

A JobSet (launch/gke/jobset.yaml) running \`bert-jax <args>\` on every host of one TPU slice.

  render   print the filled-in manifest
  apply    render and \`kubectl apply -f -\` it
  delete   kubectl delete the JobSet (its pods get SIGTERM, then --grace seconds)
  logs     kubectl logs of every pod of the JobSet, each line prefixed with its pod

  --name NAME              JobSet name: lower-case letters, digits, dashes (required)
  --image IMAGE            image with bert-jax and jax[tpu] (render, apply; see launch/gke/Dockerfile)
  --tpu-accelerator ACC    node label cloud.google.com/gke-tpu-accelerator (render, apply):
                           tpu-v4-podslice, tpu-v5p-slice, tpu-v5-lite-podslice, tpu-v6e-slice, ...
  --tpu-topology TOPO      node label cloud.google.com/gke-tpu-topology, e.g. 4x4, 2x2x4 (render, apply)
  --chips-per-host C       TPU chips per host (default: 4, or the whole slice when it fits one
                           v5e/v6e host, i.e. at most 8 chips)
  --namespace NS           Kubernetes namespace (default: default)
  --max-restarts R         whole-JobSet restarts after a failure; each resumes from the last
                           checkpoint (default: 3)
  --grace S                seconds between SIGTERM and SIGKILL for the pods (default: 300)
  --follow                 logs: keep streaming
  --dry-run                print the commands (and the manifest); run nothing
  -h, --help               this message

example:
  $prog apply --dry-run --name bert-base --image IMAGE --tpu-accelerator tpu-v5-lite-podslice \\
      --tpu-topology 4x4 -- pretrain --config configs/pretrain/bert.py:size=base \\
      --workdir gs://BUCKET/bert-base
EOF
}

# One argument as a double-quoted string, valid both as JSON and as YAML.
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/\\r}
  [[ $s != *[[:cntrl:]]* ]] || die_usage "a bert-jax argument holds a control character: $(quote "$1")"
  printf '"%s"' "$s"
}

# ---- arguments ---------------------------------------------------------------------------
(($#)) || die_usage "missing the action: render, apply, delete or logs"
case $1 in
  -h | --help) usage; exit 0 ;;
  render | apply | delete | logs) action=$1; shift ;;
  *) die_usage "unknown action '$1': choose render, apply, delete or logs" ;;
esac

name='' image='' accelerator='' topology='' chips_per_host='' namespace=default max_restarts=3
grace=300 follow=0 dry_run=0
value_options=(--name --image --tpu-accelerator --tpu-topology --chips-per-host --namespace
  --max-restarts --grace)
set_option() {
  case $1 in
    --name) name=$2 ;;
    --image) image=$2 ;;
    --tpu-accelerator) accelerator=$2 ;;
    --tpu-topology) topology=$2 ;;
    --chips-per-host) chips_per_host=$2 ;;
    --namespace) namespace=$2 ;;
    --max-restarts) max_restarts=$2 ;;
    --grace) grace=$2 ;;
    --follow) follow=1 ;;
    --dry-run) dry_run=1 ;;
    *) return 1 ;;
  esac
}
parse_options "$@"
bert_jax_args=("${rest[@]}")

dns_label='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
[[ -n $name ]] || die_usage "--name is required"
[[ $name =~ $dns_label && ${#name} -le 40 ]] \
  || die_usage "--name must be at most 40 lower-case letters, digits and dashes, got '$name'"
[[ $namespace =~ $dns_label ]] || die_usage "--namespace must be a DNS label, got '$namespace'"

# ---- the manifest --------------------------------------------------------------------------
declare -A vars=()
if [[ $action == render || $action == apply ]]; then
  [[ -n $image ]] || die_usage "$action needs --image (build one with launch/gke/Dockerfile)"
  [[ $image =~ ^[^[:space:]\"\'\#]+$ ]] || die_usage "--image must be an image reference, got '$image'"
  [[ -n $accelerator ]] || die_usage "$action needs --tpu-accelerator (e.g. tpu-v5-lite-podslice)"
  [[ $accelerator =~ ^[a-z0-9-]+$ ]] || die_usage "--tpu-accelerator looks wrong: '$accelerator'"
  [[ -n $topology ]] || die_usage "$action needs --tpu-topology (e.g. 4x4 or 2x2x4)"
  [[ $topology =~ ^[1-9][0-9]*(x[1-9][0-9]*){1,2}$ ]] \
    || die_usage "--tpu-topology must look like 4x4 or 2x2x4, got '$topology'"
  [[ $max_restarts =~ ^[0-9]+$ ]] || die_usage "--max-restarts must be a whole number, got '$max_restarts'"
  [[ $grace =~ ^[0-9]+$ ]] || die_usage "--grace must be a whole number of seconds, got '$grace'"
  ((${#bert_jax_args[@]})) || die_usage "$action needs bert-jax arguments after -- (e.g. -- pretrain ...)"

  chips=1
  IFS=x read -ra dims <<<"$topology"
  for d in "${dims[@]}"; do chips=$((chips * d)); done
  if [[ -z $chips_per_host ]]; then
    case $accelerator in
      # v5e and v6e slices of up to 8 chips are one host; bigger ones have 4 chips per host.
      tpu-v5-lite-podslice | tpu-v5-lite-device | tpu-v6e-slice) chips_per_host=$((chips <= 8 ? chips : 4)) ;;
      tpu-v4-podslice | tpu-v5p-slice) chips_per_host=$((chips < 4 ? chips : 4)) ;;
      *) die_usage "no default --chips-per-host for --tpu-accelerator $accelerator; pass one" ;;
    esac
  fi
  [[ $chips_per_host =~ ^[1-9][0-9]*$ ]] \
    || die_usage "--chips-per-host must be a positive integer, got '$chips_per_host'"
  ((chips % chips_per_host == 0)) \
    || die_usage "topology $topology has $chips chips, not a multiple of --chips-per-host $chips_per_host"

  args_yaml='[' sep=''
  for arg in "${bert_jax_args[@]}"; do args_yaml+="$sep$(json_string "$arg")"; sep=', '; done
  args_yaml+=']'

  vars=(
    [JOB_NAME]=$name [NAMESPACE]=$namespace [IMAGE]=$image [TPU_ACCELERATOR]=$accelerator
    [TPU_TOPOLOGY]=$topology [NUM_HOSTS]=$((chips / chips_per_host)) [CHIPS_PER_HOST]=$chips_per_host
    [MAX_RESTARTS]=$max_restarts [GRACE_SECONDS]=$grace
  )
fi

render() {
  local text key
  text=$(<"$template")
  for key in "${!vars[@]}"; do text=${text//"\${$key}"/"${vars[$key]}"}; done
  # The arguments go in last, so that nothing in them is taken for a placeholder.
  local args_placeholder="\${BERT_JAX_ARGS}"
  key=${text//"$args_placeholder"/}
  if [[ $key =~ \$\{[A-Za-z_][A-Za-z0-9_]*\} ]]; then
    die "$template uses ${BASH_REMATCH[0]}, which $prog does not set"
  fi
  printf '%s\n' "${text//"$args_placeholder"/"$args_yaml"}"
}

# ---- actions -----------------------------------------------------------------------------
selector=jobset.sigs.k8s.io/jobset-name=$name
case $action in
  render) render ;;
  apply)
    manifest=$(render)
    if ((dry_run)); then
      printf "+ kubectl apply -f - <<'EOF'\n%s\nEOF\n" "$manifest"
    else
      echo "+ kubectl apply -f - (the manifest of: $prog render ...)" >&2
      kubectl apply -f - <<<"$manifest"
      echo "$prog: follow with: $prog logs --name $name --namespace $namespace --follow" >&2
    fi
    ;;
  delete) run kubectl delete jobset "$name" --namespace="$namespace" ;;
  logs)
    flags=(--namespace="$namespace" --selector="$selector" --all-containers --prefix --tail=-1
      --max-log-requests=256)
    ((follow)) && flags+=(--follow)
    run kubectl logs "${flags[@]}"
    ;;
esac
