#!/usr/bin/env bash
# Run a command with the test services up: PostgreSQL (scripts/postgres.sh) and a live Weaviate
# (scripts/weaviate.sh), their addresses exported (TEST_POSTGRES_URL, WEAVIATE_URL,
# EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL), and the Go tools the tests use on PATH
# (scripts/go-tools.sh: helm). A Weaviate this script started is stopped when the
# command ends; one that was already running is left as it was.
#
#   scripts/with-services.sh .venv/bin/python -m pytest
#
# A service that cannot be had (no apt-get or root for PostgreSQL, no Go for Weaviate or helm) is a
# loud warning and its tests report themselves as not run; with CI set it fails the run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

missing=()
export_lines() {
  local line
  while IFS= read -r line; do
    [[ "$line" =~ ^[A-Z_][A-Z0-9_]*= ]] && export "${line?}"
  done <<<"$1"
}

if lines="$("$here/postgres.sh" start)"; then
  export_lines "$lines"
else
  unset TEST_POSTGRES_URL  # a server that does not answer is no server
  missing+=("PostgreSQL")
fi

started_weaviate=0
if [[ -n "${WEAVIATE_URL:-}" ]]; then
  echo "with-services.sh: using the Weaviate at $WEAVIATE_URL" >&2
elif lines="$("$here/weaviate.sh" url 2>/dev/null)"; then
  export_lines "$lines"
elif lines="$("$here/weaviate.sh" start)"; then
  export_lines "$lines"
  started_weaviate=1
else
  missing+=("Weaviate")
fi

if lines="$("$here/go-tools.sh")"; then
  export_lines "$lines"
else
  missing+=("helm (the Helm chart's tests)")
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ -n "${CI:-}" ]]; then
    echo "with-services.sh: error: ${missing[*]} could not be started, and CI needs every test to run" >&2
    exit 1
  fi
  for service in "${missing[@]}"; do
    echo "with-services.sh: WARNING: no $service: its tests will NOT run (see the error above)" >&2
  done
fi

if [[ "$started_weaviate" == 1 ]]; then
  trap '"$here/weaviate.sh" stop' EXIT
  "$@"
else
  exec "$@"
fi
