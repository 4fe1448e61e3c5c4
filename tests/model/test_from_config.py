"""New tokenizers and tiny models: determinism, special tokens, round trips, reloads, sizes, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.errors import ConfigError, UserError
from lmforge.model import new_tokenizer
from lmforge.model.from_config import build_config, build_preset_tokenizer, create_model
from lmforge.model.presets import PRESETS
from lmforge.tools.create_model import create_model_main
from lmforge.model.new_tokenizer import build_tokenizer
from lmforge.model.special_tokens import ALL_CHAT_TOKENS, CHATML_TOKENS, ENDOFTEXT

# A 2-layer, 64-wide Qwen2 with 4 query heads and 2 kv heads of size 16, 176-wide MLP, 1024-token vocab.
H, FF, KV, V = 64, 176, 2 * 16, 1024
# Per layer: q, k and v projections (with biases), o projection, gate/up/down MLP, two RMSNorms.
QWEN2_LAYER = (H * H + H) + 2 * (H * KV + KV) + H * H + 3 * H * FF + 2 * H
TINY_QWEN2_PARAMS = V * H + 2 * QWEN2_LAYER + H  # tied embedding, layers, final norm
TINY_LLAMA_PARAMS = TINY_QWEN2_PARAMS - 2 * (H + 2 * KV)  # Llama has no q/k/v biases


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    return create_model("tiny-qwen2", tmp_path_factory.mktemp("tiny-qwen2") / "model")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return create_model("tiny-llama", tmp_path_factory.mktemp("tiny-llama") / "model")


def _fingerprint(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


# --- tokenizer ---------------------------------------------------------------------------------------


def test_tokenizer_build_is_deterministic():
    first = build_tokenizer(1024, CHATML_TOKENS)
    new_tokenizer._train_bpe.cache_clear()  # train again for real, not from the cache
    second = build_tokenizer(1024, CHATML_TOKENS)
    assert first.get_vocab() == second.get_vocab()
    assert _fingerprint(first) == _fingerprint(second)
    assert len(first) == 1024


def test_tokenizer_build_is_deterministic_across_processes():
    # A fresh interpreter gets fresh hash seeds (Python's and the Rust trainer's).
    code = (
        "import hashlib; from lmforge.model.new_tokenizer import build_tokenizer; from lmforge.model.special_tokens import CHATML_TOKENS; "
        "t = build_tokenizer(1024, CHATML_TOKENS); "
        "print(hashlib.sha256(t.backend_tokenizer.to_str().encode()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _fingerprint(build_tokenizer(1024, CHATML_TOKENS))


def test_special_tokens_are_single_ids_after_the_learned_vocab():
    tokenizer = build_tokenizer(1024, ALL_CHAT_TOKENS)
    specials = [ENDOFTEXT, *ALL_CHAT_TOKENS]
    assert len(specials) == 20 and len(tokenizer) == 1024
    for offset, token in enumerate(specials):
        token_id = 1024 - 20 + offset
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        ids = tokenizer.encode(f"a{token}b\n{token} x", add_special_tokens=False)
        assert ids.count(token_id) == 2, token
        assert token in tokenizer.all_special_tokens
    assert tokenizer.eos_token == tokenizer.pad_token == ENDOFTEXT
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 1004
    assert tokenizer.bos_token is None and tokenizer.unk_token is None


def test_round_trip_of_any_unicode_text():
    tokenizer = build_tokenizer(1024, CHATML_TOKENS)
    text = (
        "  Héllo,\twörld!  \n\n naïve café — 你好，世界 · こんにちは · Привет · مرحبا · 😀🚀🇫🇷 "
        "∑x² ≤ 1e-5\r\nline<|im_end|>\n\n\n   trailing   "
    )
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < 1024 for i in ids)
    # Characters never seen in training still encode, as bytes.
    assert tokenizer.decode(tokenizer.encode("𓀀", add_special_tokens=False)) == "𓀀"


def test_how_separately_encoded_pieces_join():
    tokenizer = build_tokenizer(1024, CHATML_TOKENS)

    def encode(*pieces: str) -> list[int]:
        return [i for p in pieces for i in tokenizer.encode(p, add_special_tokens=False)]

    # Cuts at special tokens, before a space-led word, or after a newline are invisible.
    assert encode("<|im_start|>user\nHi<|im_end|>\n") == encode(
        "<|im_start|>", "user\nHi", "<|im_end|>", "\n"
    )
    assert encode("Hello world") == encode("Hello", " world")
    assert encode("x\ny") == encode("x\n", "y")
    # Cuts inside a whitespace run, or between a space and its word, are not (no byte-level BPE can).
    assert encode("Hi\n\n") != encode("Hi\n", "\n")
    assert encode("a b") != encode("a ", "b")


# --- presets and create_model ------------------------------------------------------------------------


def test_presets_are_registered():
    from lmforge.model.presets import FAMILY_CONFIGS

    families = [f"tiny-{name}" for name in FAMILY_CONFIGS]  # the architecture matrix (tests/model/test_architectures.py)
    assert PRESETS.names() == sorted(["small-qwen2", "tiny-llama", "tiny-qwen2", *families])
    with pytest.raises(ConfigError, match="did you mean 'tiny-qwen2'"):
        PRESETS.get("tiny-qwen")


def test_tiny_qwen2_reloads_through_auto_classes(tiny_qwen2):
    assert sorted(p.name for p in tiny_qwen2.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    built = build_preset_tokenizer("tiny-qwen2")
    loaded = AutoTokenizer.from_pretrained(tiny_qwen2)
    text = "<|im_start|>user\n  Héllo 你好 😀 don't 12345<|im_end|>\n"
    assert loaded.encode(text) == built.encode(text)
    assert loaded.added_tokens_decoder == built.added_tokens_decoder
    assert (loaded.eos_token, loaded.eos_token_id, loaded.pad_token, loaded.pad_token_id) == (
        "<|im_end|>",
        1023,
        ENDOFTEXT,
        1021,
    )
    assert loaded.bos_token is None

    tokenizer_config = json.loads((tiny_qwen2 / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>" and tokenizer_config["pad_token"] == ENDOFTEXT
    assert "add_generation_prompt" in tokenizer_config["chat_template"]
    generation = json.loads((tiny_qwen2 / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1023, 1021] and generation["pad_token_id"] == 1021

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == 1024 and model.config.eos_token_id == 1023
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = loaded.encode("hello world")
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 1024) and logits.dtype == torch.float32


def test_parameter_counts_match_hand_computation(tiny_qwen2, tiny_llama):
    assert TINY_QWEN2_PARAMS == 158_272
    qwen2 = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert sum(p.numel() for p in qwen2.parameters()) == TINY_QWEN2_PARAMS
    assert sum(p.numel() for p in llama.parameters()) == TINY_LLAMA_PARAMS == 158_016


def test_small_qwen2_config_pads_the_vocabulary():
    tokenizer = build_preset_tokenizer("small-qwen2")
    config = build_config("small-qwen2", tokenizer)
    assert 5_000 < len(tokenizer) < 32_000  # the shipped corpus cannot fill 32k; the embedding is padded
    assert config.vocab_size == 32_000 and not config.tie_word_embeddings
    with torch.device("meta"):  # shapes only, no memory, no init
        model = AutoModelForCausalLM.from_config(config)
    h, ff, kv = 512, 1408, 4 * 64
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * ff + 2 * h
    assert sum(p.numel() for p in model.parameters()) == 2 * 32_000 * h + 8 * layer + h == 56_377_856


def test_tiny_llama_adds_bos_once(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token, tokenizer.pad_token) == (
        bos,
        "<|eot_id|>",
        ENDOFTEXT,
    )
    assert tokenizer.encode("hi")[0] == bos
    assert tokenizer.encode("hi", add_special_tokens=False)[0] != bos
    messages = [{"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "hello"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>"
    )
    ids = tokenizer.apply_chat_template(messages, return_dict=False)
    assert ids.count(bos) == 1


def test_chatml_template_renders_exactly(tiny_qwen2):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    expected = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\n2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
    )
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt == expected.removesuffix("4<|im_end|>\n")


def test_same_seed_same_weights_different_seed_different(tiny_qwen2, tmp_path):
    reference = load_file(tiny_qwen2 / "model.safetensors")
    same = load_file(create_model("tiny-qwen2", tmp_path / "same", seed=0) / "model.safetensors")
    other = load_file(create_model("tiny-qwen2", tmp_path / "other", seed=1) / "model.safetensors")
    assert reference.keys() == same.keys() == other.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    weights = [k for k in reference if k.endswith(("proj.weight", "embed_tokens.weight"))]
    assert weights and not any(torch.equal(reference[k], other[k]) for k in weights)


def test_overrides_change_the_config(tmp_path):
    overrides = {"num_hidden_layers": 4, "rms_norm_eps": 1, "dtype": "bfloat16"}
    path = create_model("tiny-qwen2", tmp_path / "deep", overrides=overrides)
    assert {t.dtype for t in load_file(path / "model.safetensors").values()} == {torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert model.config.num_hidden_layers == 4 and model.config.rms_norm_eps == 1.0
    assert sum(p.numel() for p in model.parameters()) == TINY_QWEN2_PARAMS + 2 * QWEN2_LAYER


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"num_hidden_layer": 4},
            "unknown config field 'num_hidden_layer'.*did you mean 'num_hidden_layers'",
        ),
        ({"hidden_size": "wide"}, "'hidden_size' expects int"),
        ({"tie_word_embeddings": 1}, "'tie_word_embeddings' expects bool"),
        ({"num_attention_heads": 5}, "hidden_size=64 is not divisible by num_attention_heads=5"),
        ({"vocab_size": 512}, "vocab_size=512 is smaller than the tokenizer's 1024 ids"),
        ({"dtype": "fp16"}, "'dtype' must be one of float32, bfloat16, float16"),
    ],
)
def test_bad_overrides_raise_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config("tiny-qwen2", build_preset_tokenizer("tiny-qwen2"), overrides)


def test_non_empty_output_dir_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=f"output directory {target} is not empty"):
        create_model("tiny-qwen2", target)
    (target / "chat_template.jinja").write_text("stale")
    create_model("tiny-qwen2", target, overwrite=True)
    assert (target / "config.json").is_file() and (target / "notes.txt").read_text() == "keep me"
    assert not (target / "chat_template.jinja").exists()  # it would shadow tokenizer_config's template


def test_cli(tmp_path, capsys):
    target = tmp_path / "cli"
    argv = [
        "tiny-llama",
        str(target),
        "--seed",
        "3",
        "--set",
        "num_hidden_layers=1",
        "--set",
        "hidden_act=gelu",
    ]
    assert create_model_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(target)
    config = json.loads((target / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_act"]) == ("llama", 1, "gelu")
    with pytest.raises(UserError, match="not empty"):
        create_model_main(["tiny-llama", str(target)])
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE, got 'layers'"):
        create_model_main(["tiny-llama", str(tmp_path / "x"), "--set", "layers"])
