"""Model builders: a tiny Llama with a character tokenizer, or any local/hub causal LM."""

from __future__ import annotations

import string
from dataclasses import replace
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from catalyst_ttt.device import uses_bf16
from catalyst_ttt.errors import UserError, first_line
from catalyst_ttt.schema import LoraConfigSchema, ModelConfig

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARACTERS = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable character; no merges, so every step is visible to the model."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tokenizer.padding_side = "left"  # generation pads on the left
    return tokenizer


def new_tiny_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def load_tokenizer(name_or_path: str, cfg: ModelConfig | None = None):
    cfg = cfg or ModelConfig()
    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"model {name_or_path!r}: its tokenizer could not be loaded: {first_line(err)}") from None


def load_pretrained(name_or_path: str, cfg: ModelConfig | None = None, device: str | torch.device = "cpu"):
    """A causal LM (fp32, on `device`) and its tokenizer from a local directory or a reachable hub id.

    Weights load from safetensors only, unless `model.allow_pickle`; the repository's own code
    runs only with `model.trust_remote_code`."""
    cfg = cfg or ModelConfig()
    tokenizer = load_tokenizer(name_or_path, cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickle else True,
            dtype=torch.float32,
        )
    except (OSError, ValueError) as err:
        hint = "" if cfg.allow_pickle else " (only safetensors weights load unless model.allow_pickle=true)"
        raise UserError(f"model {name_or_path!r} could not be loaded: {first_line(err)}{hint}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def with_lora(model, lora: LoraConfigSchema):
    """`model` under a fresh LoRA adapter that TTT trains while the weights under it stay frozen, or
    `model` itself when `lora.r` is 0. The adapter is injected into `model`'s own modules.

    Frozen weights need no fp32 master copy, so on a bf16 GPU they are cast to bf16 (7B: 15 GB, not
    30); peft keeps the adapter itself in fp32."""
    if not lora.r:
        return model
    if uses_bf16(next(model.parameters()).device):
        model = model.to(torch.bfloat16)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. a target module this architecture does not have
        raise UserError(f"ttt.lora: {first_line(err)}") from None


def with_chat_template(splits: dict, tokenizer) -> dict:
    """Prompts wrapped in the tokenizer's chat template (as a user turn), when it has one."""
    if not getattr(tokenizer, "chat_template", None):
        return splits

    def wrap(problem):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem.prompt}], tokenize=False, add_generation_prompt=True
        )
        return replace(problem, prompt=prompt)

    return {name: [wrap(p) for p in problems] for name, problems in splits.items()}


def save_checkpoint(model, tokenizer, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
