"""Real models for tests: a tiny random-weight Phi-3 with the real Phi-3 tokenizer and chat
template (from llama.cpp's vocabulary file in tests/assets, MIT), and helpers around it."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
PHI3_VOCAB = "ggml-vocab-phi-3.gguf"


def build_tiny_phi3(dest: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer, 64-wide Phi3ForCausalLM (random weights) with the real tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, Phi3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ASSETS, gguf_file=PHI3_VOCAB)
    config = AutoConfig.from_pretrained(ASSETS, gguf_file=PHI3_VOCAB)
    config.hidden_size = 64
    config.intermediate_size = 128
    config.num_hidden_layers = 2
    config.num_attention_heads = 4
    config.num_key_value_heads = 4
    # Wider than the default 0.02, so that greedy decoding writes varied visible tokens
    # instead of a run of newlines (which the core would rightly treat as an empty answer).
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config.eos_token_id = [32000, 32007]
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def make_lora_adapter(base: Path, dest: Path, *, seed: int = 1, scale: float = 1.0) -> Path:
    """A LoRA adapter for `base` with random (non-zero) weights, saved with save_pretrained:
    it changes the model's output, as a trained adapter would."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(str(dest))
    return dest
