"""Hugging Face models built from config objects (never downloaded), as `--model` factories:
width -> model, head dim 16, vocabulary 256 (bytes), one or two layers."""

from __future__ import annotations

import logging

from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

logging.getLogger("transformers").setLevel(logging.ERROR)  # GPT-2's default bos/eos ids exceed 256

VOCAB, HEAD_DIM, DEPTH = 256, 16, 2


def llama(width: int) -> LlamaForCausalLM:
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=DEPTH,
            num_attention_heads=width // HEAD_DIM,
            num_key_value_heads=width // HEAD_DIM,
            max_position_embeddings=128,
        )
    )


def gpt2(width: int) -> GPT2LMHeadModel:  # Conv1D layers, tied unembedding
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_embd=width,
            n_layer=DEPTH,
            n_head=width // HEAD_DIM,
            n_positions=128,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def qwen3(width: int) -> Qwen3ForCausalLM:  # QK-norm
    return Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=VOCAB,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=DEPTH,
            num_attention_heads=width // HEAD_DIM,
            num_key_value_heads=width // HEAD_DIM // 2,
            head_dim=HEAD_DIM,
            max_position_embeddings=128,
            tie_word_embeddings=False,
        )
    )


def mixtral(width: int) -> MixtralForCausalLM:  # 3-D expert banks and a router
    return MixtralForCausalLM(
        MixtralConfig(
            vocab_size=VOCAB,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=DEPTH,
            num_attention_heads=width // HEAD_DIM,
            num_key_value_heads=width // HEAD_DIM,
            max_position_embeddings=128,
            num_local_experts=4,
            num_experts_per_tok=2,
        )
    )


# --------------------------------------------------------------------------- config.json files

TINY_CONFIGS = {
    # Llama with tied embeddings and grouped-query attention (2 query heads per KV head).
    "llama": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 256,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
        "architectures": ["LlamaForCausalLM"],
    },
    # An MoE with QK-norm: 4 experts, 2 per token.
    "qwen3_moe": {
        "model_type": "qwen3_moe",
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 16,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 256,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    },
}


def write_hf_config(folder, family: str, **overrides) -> str:
    """A tiny config.json of `family` (TINY_CONFIGS) in `folder`; returns the folder."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_CONFIGS[family] | overrides))
    return str(folder)
