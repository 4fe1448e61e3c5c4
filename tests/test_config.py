"""Config loading: LLaMA-Factory keys, overrides, coercion, did-you-mean, cross-field rules."""

import json

import pytest

from lmforge.config import load_config
from lmforge.errors import ConfigError

BASE = ["model_name_or_path=m", "dataset=d", "output_dir=out"]


def test_llamafactory_yaml_keys_route_to_groups(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "model_name_or_path: m\ntrust_remote_code: true\nstage: sft\ndo_train: true\nfinetuning_type: lora\n"
        "lora_rank: 16\nlora_target: all\ndataset: identity,alpaca_en_demo\ntemplate: qwen\ncutoff_len: 1024\n"
        "max_samples: 1000\noverwrite_cache: true\npreprocessing_num_workers: 2\noutput_dir: out\n"
        "logging_steps: 10\nsave_steps: 500\nplot_loss: true\noverwrite_output_dir: true\nreport_to: none\n"
        "per_device_train_batch_size: 1\ngradient_accumulation_steps: 8\nlearning_rate: 1.0e-4\n"
        "num_train_epochs: 3.0\nlr_scheduler_type: cosine\nwarmup_ratio: 0.1\nbf16: true\nddp_timeout: 180000000\n"
        "resume_from_checkpoint: null\nval_size: 0.1\nper_device_eval_batch_size: 1\neval_strategy: steps\n"
        "eval_steps: 500\n"
    )
    cfg = load_config(path)
    assert cfg.model.trust_remote_code is True
    assert cfg.lora.lora_rank == 16 and cfg.lora.lora_alpha_value == 32
    assert cfg.data.dataset_names == ["identity", "alpaca_en_demo"]
    assert cfg.data.cutoff_len == 1024 and cfg.data.max_samples == 1000
    assert cfg.training.learning_rate == pytest.approx(1e-4)
    assert cfg.training.warmup_steps == pytest.approx(0.1)  # transformers 5 reads a float < 1 as a ratio
    assert cfg.training.gradient_accumulation_steps == 8
    assert cfg.training.bf16 is True


def test_overrides_are_typed_and_win(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model_name_or_path": "m", "dataset": "d", "output_dir": "o", "cutoff_len": 64}))
    cfg = load_config(path, ["cutoff_len=128", "learning_rate=1e-4", "train_on_prompt=true", "val_size=10"])
    assert cfg.data.cutoff_len == 128
    assert cfg.training.learning_rate == pytest.approx(1e-4)  # YAML reads '1e-4' as a string
    assert cfg.data.train_on_prompt is True
    assert cfg.data.val_size == 10


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora_rnak=4", "unknown key 'lora_rnak' (did you mean 'lora_rank'?)"),
        ("cutof_len=4", "did you mean 'cutoff_len'?"),
        ("cutoff_len=abc", "key 'cutoff_len' expects int, got 'abc'"),
        ("stage=rmm", "stage: 'rmm' is not one of pt, sft, rm, dpo, kto, grpo, ppo (did you mean 'rm'?)"),
        ("pref_loss=simpoo", "pref_loss: 'simpoo' is not one of sigmoid, hinge, ipo, orpo, simpo (did you mean 'simpo'?)"),
        ("pref_beta=0", "'pref_beta' must be > 0"),
        ("ref_model=m", "'ref_model'/'precompute_ref_log_probs' are for stage dpo or kto, not 'sft'"),
        ("finetuning_type=frezee", "did you mean 'freeze'?"),
        ("eval_strategy=steps", "'eval_strategy: steps' needs eval data"),
        ("adapter_name_or_path=a", "set finetuning_type: lora"),
        ("streaming=true", "'streaming' is not supported"),
    ],
)
def test_bad_keys_fail_with_named_key(override, message):
    overrides = BASE + [override]
    if override.startswith("adapter"):
        overrides.append("finetuning_type=full")
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_val_size_and_eval_dataset_conflict():
    with pytest.raises(ConfigError, match="either 'val_size' or 'eval_dataset'"):
        load_config(None, BASE + ["val_size=0.1", "eval_dataset=e"])


def test_preference_stages_refuse_single_sequence_batching():
    with pytest.raises(ConfigError, match="cannot be used with stage 'dpo'"):
        load_config(None, BASE + ["stage=dpo", "packing=true"])
    with pytest.raises(ConfigError, match="stage rm batches pairs of sequences"):
        load_config(None, BASE + ["stage=rm", "group_by_length=true"])


def test_neat_packing_needs_sft():
    with pytest.raises(ConfigError, match="'neat_packing' is for stage sft"):
        load_config(None, BASE + ["stage=pt", "neat_packing=true"])


def test_missing_output_dir_and_model():
    with pytest.raises(ConfigError, match="output_dir"):
        load_config(None, ["model_name_or_path=m", "dataset=d"])
    with pytest.raises(ConfigError, match="model_name_or_path"):
        load_config(None, ["dataset=d", "output_dir=o"])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("prefix", ["gradient", "activation"])
def test_checkpointing_keys_old_and_new_resolve_to_one_setting(prefix):
    cfg = load_config(
        None,
        [
            "model_name_or_path=m", "output_dir=o", "dataset=d",
            f"{prefix}_checkpointing=true", f'{prefix}_checkpointing_kwargs={{"every_n_layers": 2}}',
        ]
    )
    assert cfg.training.activation_checkpointing and cfg.training.gradient_checkpointing
    assert cfg.training.activation_checkpointing_kwargs == {"use_reentrant": False, "every_n_layers": 2}
    assert cfg.training.checkpoint_every_n_layers == 2
    plain = load_config(None, ["model_name_or_path=m", "output_dir=o", "dataset=d"])
    assert not plain.training.gradient_checkpointing and plain.training.checkpoint_every_n_layers == 1


def test_selective_checkpointing_implies_checkpointing_with_a_policy():
    from lmforge.config.checkpointing_policy import selective_checkpoint_context

    cfg = load_config(None, ["model_name_or_path=m", "output_dir=o", "dataset=d", "selective_checkpointing=true"])
    assert cfg.training.activation_checkpointing
    assert cfg.training.activation_checkpointing_kwargs["context_fn"] is selective_checkpoint_context
