#!/usr/bin/env bash
# Least-privilege users for mlcycle on a MinIO server (see infra/minio/README.md).
#
#   MC_ALIAS=prod infra/minio/setup.sh           # an `mc alias` holding the MinIO administrator's keys
#
# Creates the bucket (the flows never need CreateBucket), the three policies of this folder and one user
# per policy. Each user's secret key is read from the environment (MLCYCLE_FLOWS_SECRET_KEY,
# MLCYCLE_SERVING_SECRET_KEY, MLCYCLE_INFERENCE_SECRET_KEY), never from this file or the command line.
# Idempotent: re-running updates the policies in place.
set -euo pipefail
cd "$(dirname "$0")"
alias="${MC_ALIAS:?set MC_ALIAS to an mc alias with administrator keys (mc alias set ...)}"
bucket="${MLCYCLE_S3_BUCKET:-mlcycle}"
if [ "$bucket" != mlcycle ]; then
  echo "the policies name the bucket 'mlcycle': replace it in infra/minio/*.json first" >&2
  exit 2
fi
project="${MLCYCLE_STORE_PREFIX:-${MLCYCLE_PROJECT_NAME:-mlcycle}}"
if [ "$project" != mlcycle ]; then
  echo "the policies name the project 'mlcycle' (keys under mlcycle/): replace it in infra/minio/*.json first" >&2
  exit 2
fi

mc mb --ignore-existing "$alias/$bucket"
for role in flows serving inference-writer; do
  mc admin policy create "$alias" "mlcycle-$role" "mlcycle-$role.json"
done

add_user() {  # user, policy, variable holding the secret key
  local secret="${!3:?set $3 (the secret key of $1)}"
  # From a variable, not typed on the command line: it stays out of the shell history (run this on the
  # administrator's machine: mc itself takes the secret as an argument).
  mc admin user add "$alias" "$1" "$secret" >/dev/null
  mc admin policy attach "$alias" "$2" --user "$1" || true  # "already attached" on a re-run
}
add_user mlcycle-flows mlcycle-flows MLCYCLE_FLOWS_SECRET_KEY
add_user mlcycle-serving mlcycle-serving MLCYCLE_SERVING_SECRET_KEY
add_user mlcycle-inference mlcycle-inference-writer MLCYCLE_INFERENCE_SECRET_KEY
mc admin user list "$alias"
