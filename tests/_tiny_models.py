"""Tiny randomly initialised causal LMs and a tiny tokenizer, built offline for the tests."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 320


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in a fraction of a second on the built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from matgptq.data import load_documents

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    docs = load_documents("sotu", "calibration")[:2]
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def tiny_config(family: str = "llama", layers: int = 2):
    from transformers import AutoConfig

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=0, eos_token_id=1, pad_token_id=1)
    if family == "llama":
        return AutoConfig.for_model("llama", **common)
    if family == "qwen2":
        return AutoConfig.for_model("qwen2", **common, use_sliding_window=False)
    if family == "gemma3":
        return AutoConfig.for_model("gemma3_text", **common, head_dim=16, sliding_window=8,
                                    layer_types=["sliding_attention", "full_attention"][:layers] + ["full_attention"] * max(0, layers - 2))
    raise ValueError(family)


def tiny_model(family: str = "llama", layers: int = 2, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, layers)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    # larger-than-init weights make quantization errors visible
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    return m


def save_tiny(path: Path, family: str = "llama", layers: int = 2) -> Path:
    m = tiny_model(family, layers)
    m.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tok():
    return tiny_tokenizer()
