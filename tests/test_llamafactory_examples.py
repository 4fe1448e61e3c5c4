"""LLaMA-Factory's own example YAMLs for text stages run with only the model path changed, or stop before anything
loads with a line that names the key lmforge does not implement.

The YAMLs are copied unchanged from LLaMA-Factory's examples/ into tests/assets/llamafactory_examples/ (with its
demo datasets, trimmed, under data/ and the DeepSpeed JSONs they name under deepspeed/). Each test runs in a
directory laid out like a LLaMA-Factory checkout (`examples/`, `data/`), so the files' relative paths
(`dataset_dir: data` by default, `deepspeed: examples/deepspeed/...`, `output_dir: saves/...`) work as written.

Left out (multimodal: a vision / audio model or dataset): extras/oft/qwen2_5vl_oft_sft.yaml, inference/mossvl.yaml,
inference/qwen3vl.yaml, merge_lora/mossvl_lora_sft.yaml, merge_lora/qwen3vl_lora_sft.yaml,
train_full/mossvl_full_sft.yaml, train_full/qwen3vl_full_sft.yaml, train_lora/mossvl_lora_sft.yaml,
train_lora/qwen3vl_lora_dpo.yaml, train_lora/qwen3vl_lora_sft.yaml; and extras/multi_tokens/tokens_cfg.yaml (a
token description file for `new_special_tokens_config`, not a run config).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main

ASSETS = Path(__file__).parent / "assets" / "llamafactory_examples"
README = Path(__file__).parents[1] / "README.md"

RUNS = "runs"
EXPECTED: dict[str, str] = {
    # file (under LLaMA-Factory's examples/) -> "runs" | "refused: <the key named in the one-line refusal>"
    "extras/adam_mini/qwen2_full_sft.yaml": RUNS,
    "extras/apollo/llama3_full_sft.yaml": "runs",
    "extras/asft/llama2_full_asft.yaml": "refused: use_asft_loss",
    "extras/asft/qwen2_full_asft.yaml": "refused: use_asft_loss",
    "extras/badam/llama3_full_sft.yaml": RUNS,
    "extras/dft/qwen2_full_sft.yaml": "refused: use_dft_loss",
    "extras/eaft/qwen25_05b_eaft_full.yaml": "refused: use_eaft_loss",
    "extras/fp8/llama3_fp8_deepspeed_sft.yaml": "refused: fp8",
    "extras/fp8/llama3_fp8_fsdp_sft.yaml": "refused: fp8",
    "extras/fsdp_qlora/llama3_lora_sft.yaml": RUNS,
    "extras/galore/llama3_full_sft.yaml": "runs",
    "extras/llama_pro/llama3_freeze_sft.yaml": RUNS,
    "extras/loraplus/llama3_lora_sft.yaml": RUNS,
    "extras/mod/llama3_full_sft.yaml": "refused: mixture_of_depths",
    "extras/muon/qwen2_full_sft.yaml": RUNS,
    "extras/nlg_eval/llama3_lora_predict.yaml": RUNS,
    "extras/oft/llama3_oft_sft.yaml": "refused: finetuning_type",  # 'oft'
    "extras/pissa/llama3_lora_sft.yaml": RUNS,
    "extras/qoft/llama3_oft_sft_awq.yaml": "refused: finetuning_type",
    "extras/qoft/llama3_oft_sft_bnb_npu.yaml": "refused: finetuning_type",
    "extras/qoft/llama3_oft_sft_gptq.yaml": "refused: finetuning_type",
    "inference/qwen3.yaml": RUNS,
    "inference/qwen3_full_sft.yaml": RUNS,
    "inference/qwen3_lora_sft.yaml": RUNS,
    "merge_lora/qwen3_full_sft.yaml": RUNS,
    "merge_lora/qwen3_gptq.yaml": "refused: export_quantization_bit",
    "merge_lora/qwen3_lora_sft.yaml": RUNS,
    "train_full/qwen3_full_sft.yaml": RUNS,  # with the deepspeed package installed (it names ds_z3_config.json)
    "train_lora/qwen3_lora_dpo.yaml": RUNS,
    "train_lora/qwen3_lora_kto.yaml": RUNS,
    "train_lora/qwen3_lora_pretrain.yaml": RUNS,
    "train_lora/qwen3_lora_reward.yaml": RUNS,
    "train_lora/qwen3_lora_sft.yaml": RUNS,
    "train_lora/qwen3_lora_sft_ds3.yaml": RUNS,  # with the deepspeed package installed
    "train_lora/qwen3_lora_sft_ray.yaml": "refused: ray_num_workers",
    "train_lora/qwen3_preprocess.yaml": RUNS,
}
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def command_of(name: str) -> str:
    return {"merge_lora": "export", "inference": "chat"}.get(name.split("/")[0], "train")


def raw_of(name: str) -> dict:
    return yaml.safe_load((ASSETS / name).read_text())


@pytest.fixture
def lf_checkout(tmp_path, monkeypatch):
    """A working directory shaped like a LLaMA-Factory checkout: examples/ and data/."""
    (tmp_path / "examples").symlink_to(ASSETS)
    (tmp_path / "data").symlink_to(ASSETS / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def model_for(tiny_model_dir, tiny_llama_dir):
    """The tiny model standing in for an example's model: Llama 3 tokens for llama* templates, ChatML otherwise."""
    return lambda name: tiny_llama_dir if str(raw_of(name).get("template", "")).startswith("llama") else tiny_model_dir


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a tokenizer or a model is loaded."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a refused config loaded a tokenizer or model")

    for cls in ("AutoTokenizer", "AutoModelForCausalLM", "AutoConfig"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", refuse)


def test_the_table_covers_every_copied_example():
    assert sorted(EXPECTED) == sorted(str(p.relative_to(ASSETS)) for p in ASSETS.rglob("*.yaml"))


def test_the_demo_data_is_small_and_every_named_dataset_is_registered():
    assert sum(p.stat().st_size for p in (ASSETS / "data").iterdir()) < 300_000
    info = json.loads((ASSETS / "data" / "dataset_info.json").read_text())
    for name in EXPECTED:
        raw = raw_of(name)
        for key in ("dataset", "eval_dataset"):
            for dataset in str(raw.get(key) or "").split(","):
                if dataset and not EXPECTED[name].startswith("refused"):
                    assert dataset.strip() in info, f"{name}: {dataset}"


@pytest.mark.parametrize("name", [n for n, outcome in EXPECTED.items() if outcome == RUNS])
def test_example_config_loads(name, lf_checkout, model_for):
    """The loader and every validation rule accept the file as shipped, with only the model path changed."""
    from lmforge.config.loader import load_config, load_inference_config
    from lmforge.errors import ConfigError

    overrides = [f"model_name_or_path={model_for(name)}"]
    if command_of(name) != "train":
        cfg = load_inference_config(f"examples/{name}", overrides)
        assert cfg.model.model_name_or_path == str(model_for(name))
        return
    if "deepspeed" in raw_of(name) and not HAS_DEEPSPEED:
        with pytest.raises(ConfigError, match="the deepspeed package is not installed"):
            load_config(f"examples/{name}", overrides)
        return
    cfg = load_config(f"examples/{name}", overrides)
    assert cfg.finetuning.stage == raw_of(name)["stage"]


@pytest.mark.parametrize("name", [n for n, outcome in EXPECTED.items() if outcome.startswith("refused")])
def test_example_is_refused_before_loading(name, lf_checkout, model_for, no_loading, capsys):
    """The real CLI exits with an error naming the key; no tokenizer or model is loaded first."""
    key = EXPECTED[name].removeprefix("refused: ")
    code = main([command_of(name), f"examples/{name}", f"model_name_or_path={model_for(name)}"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("lmforge: error: ")
    line = next(line for line in err.splitlines() if f"'{key}'" in line or f"{key}:" in line)
    if key != "finetuning_type":
        assert "not supported" in line and "LLaMA-Factory" in line, line
    assert not Path("saves").exists()


def _train(name: str, model: Path, *extra: str) -> None:
    """`lmforge train` on the example, capped to one short step on a few records."""
    assert main(["train", f"examples/{name}", f"model_name_or_path={model}", "max_steps=1", "max_samples=8",
                 "cutoff_len=64", "per_device_train_batch_size=2", "gradient_accumulation_steps=1",
                 "preprocessing_num_workers=null", "dataloader_num_workers=0", "save_strategy='no'",
                 "logging_steps=1", "disable_tqdm=true", "data_cache_dir=cache", *extra]) == 0


@pytest.mark.slow
def test_lora_sft_then_merge_then_chat(lf_checkout, tiny_model_dir, monkeypatch, capsys):
    """LLaMA-Factory's README workflow: train_lora -> merge_lora -> inference, each file as shipped."""
    from transformers import AutoModelForCausalLM

    _train("train_lora/qwen3_lora_sft.yaml", tiny_model_dir)
    assert (lf_checkout / "saves/qwen3-4b/lora/sft/adapter_config.json").is_file()
    # merge_lora/qwen3_lora_sft.yaml reads adapter_name_or_path: saves/qwen3-4b/lora/sft, the run above
    assert main(["export", "examples/merge_lora/qwen3_lora_sft.yaml", f"model_name_or_path={tiny_model_dir}"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(lf_checkout / "saves/qwen3_sft_merged")
    assert merged.config.model_type == "qwen2"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("Hi\nexit\n"))
    assert main(["chat", "examples/inference/qwen3_lora_sft.yaml", f"model_name_or_path={tiny_model_dir}",
                 "max_new_tokens=4"]) == 0


@pytest.mark.slow
def test_full_sft_runs(lf_checkout, tiny_model_dir):
    # The file names examples/deepspeed/ds_z3_config.json; without the deepspeed package it trains with DDP.
    _train("train_full/qwen3_full_sft.yaml", tiny_model_dir, *([] if HAS_DEEPSPEED else ["deepspeed=null"]))
    assert (lf_checkout / "saves/qwen3-4b/full/sft/model.safetensors").is_file()


@pytest.mark.slow
def test_lora_dpo_runs(lf_checkout, tiny_model_dir):
    _train("train_lora/qwen3_lora_dpo.yaml", tiny_model_dir)
    rows = (lf_checkout / "saves/qwen3-4b/lora/dpo/trainer_log.jsonl").read_text().splitlines()
    assert any("loss" in json.loads(row) for row in rows)


# --- the README's table of LLaMA-Factory keys lmforge does not implement ---------------------------------------

TABLE_START, TABLE_END = "<!-- llamafactory-unsupported:start -->", "<!-- llamafactory-unsupported:end -->"


def render_unsupported_table() -> str:
    """The README table, made from config/llamafactory_keys.py: one row per feature, its keys and why."""
    from lmforge.config.llamafactory_keys import REASONS, UNSUPPORTED

    rows = ["| LLaMA-Factory feature | keys | why lmforge does not implement it |", "|---|---|---|"]
    for feature, keys in sorted(UNSUPPORTED.items(), key=lambda item: (not item[0], item[0].lower())):
        listed = ", ".join(f"`{key}`" for key in keys)
        rows.append(f"| {feature or 'other single options'} | {listed} | {REASONS[feature]} |")
    return "\n".join(rows)


def test_readme_table_is_generated_from_the_unsupported_keys():
    """Every key lmforge refuses is in the README, and no implemented key is; paste the table below to update it."""
    text = README.read_text()
    table = text[text.index(TABLE_START) + len(TABLE_START):text.index(TABLE_END)].strip()
    assert table == render_unsupported_table(), f"regenerate the README table:\n{render_unsupported_table()}"


def test_every_unsupported_group_says_why():
    from lmforge.config.llamafactory_keys import REASONS, UNSUPPORTED

    assert [feature for feature in UNSUPPORTED if not REASONS.get(feature)] == []
