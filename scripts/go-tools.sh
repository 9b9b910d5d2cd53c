#!/usr/bin/env bash
# The Go programs the tests use besides Weaviate, built once with `go install` (pinned versions)
# into ${XDG_CACHE_HOME:-~/.cache}/expertbot/go-tools/, outside the repository.
#
#   scripts/go-tools.sh      build what is missing; print PATH=<tools dir>:$PATH (eval-able)
#
# helm renders and lints the Helm chart (tests/test_deploy.py). The first build takes a few
# minutes; later runs print the line at once. Progress and errors go to stderr.
set -euo pipefail

TOOLS=(
  "helm helm.sh/helm/v3/cmd/helm@v3.22.0"
)
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/expertbot/go-tools"

say() { echo "go-tools.sh: $*" >&2; }

mkdir -p "$DIR/bin"
for entry in "${TOOLS[@]}"; do
  read -r name module <<<"$entry"
  version="${module##*@}"
  target="$DIR/$name-$version"
  if [[ ! -x "$target" ]]; then
    command -v go >/dev/null 2>&1 || { say "error: Go is not installed: cannot build $name $version"; exit 1; }
    say "building $name $version (first use: a few minutes)…"
    tmp="$(mktemp -d "$DIR/.build.XXXXXX")"
    if ! GOBIN="$tmp" CGO_ENABLED=0 go install "$module" >&2; then
      rm -rf "$tmp"
      say "error: building $name $version failed (see the go output above)"
      exit 1
    fi
    mv "$tmp/$name" "$target"
    rm -rf "$tmp"
  fi
  ln -sf "$target" "$DIR/bin/$name"
done
echo "PATH=$DIR/bin:$PATH"
