"""LLaMA-Factory's flag form (`--key value`, `--flag`, `--key=value`) reads exactly like `key=value`."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from lmforge.cli import config_arguments, main
from lmforge.config.flags import flags_to_overrides
from lmforge.config.loader import parse_overrides
from lmforge.errors import ConfigError

TABLE = [
    # (flag form, the key=value form it must equal)
    (["--learning_rate", "1e-4"], ["learning_rate=1e-4"]),
    (["--learning_rate=1e-4"], ["learning_rate=1e-4"]),
    (["--num_train_epochs", "3.0"], ["num_train_epochs=3.0"]),
    (["--lora_rank", "8"], ["lora_rank=8"]),
    (["--lora-rank", "8"], ["lora_rank=8"]),  # HfArgumentParser also takes the dashed spelling
    (["--lora_target", "q_proj,v_proj"], ["lora_target=q_proj,v_proj"]),
    (["--stage", "sft"], ["stage=sft"]),
    (["--do_train"], ["do_train=true"]),
    (["--do_train", "--stage", "sft"], ["do_train=true", "stage=sft"]),
    (["--do_train", "false"], ["do_train=false"]),
    (["--do_train", "True"], ["do_train=true"]),
    (["--plot_loss", "--overwrite_cache"], ["plot_loss=true", "overwrite_cache=true"]),
    (["--no_use_fast_tokenizer"], ["use_fast_tokenizer=false"]),  # bool key defaulting to true
    (["--report_to", "none"], ["report_to=none"]),
    (["--resume_from_checkpoint", "null"], ["resume_from_checkpoint=null"]),
    (["cutoff_len=64", "--cutoff_len", "32"], ["cutoff_len=64", "cutoff_len=32"]),  # later wins, as in key=value
]


@pytest.mark.parametrize("flags,pairs", TABLE, ids=[" ".join(f) for f, _ in TABLE])
def test_flags_read_as_key_value(flags, pairs):
    assert flags_to_overrides(flags) == pairs
    assert parse_overrides(flags_to_overrides(flags)) == parse_overrides(pairs)


def test_values_and_types_equal_the_key_value_form(tmp_path, tiny_model_dir):
    from lmforge.config.loader import load_config

    common = {"model_name_or_path": str(tiny_model_dir), "dataset": "numbers", "output_dir": str(tmp_path / "o")}
    by_pairs = load_config(None, [f"{k}={v}" for k, v in common.items()] + [
        "learning_rate=1e-4", "do_train=true", "lora_rank=4", "num_train_epochs=2", "plot_loss=true",
        "finetuning_type=lora", "lora_target=all"])
    argv = [a for k, v in common.items() for a in (f"--{k}", v)] + [
        "--learning_rate", "1e-4", "--do_train", "--lora_rank=4", "--num_train_epochs", "2", "--plot_loss",
        "--finetuning_type", "lora", "--lora_target", "all"]
    converted = flags_to_overrides(argv)
    by_flags = load_config(converted[0], converted[1:])  # as `lmforge train` passes them: the first as CONFIG
    for group in ("model", "data", "finetuning", "lora"):
        assert getattr(by_flags, group) == getattr(by_pairs, group)
    for key in ("learning_rate", "do_train", "num_train_epochs"):
        assert getattr(by_flags.training, key) == getattr(by_pairs.training, key)
        assert type(getattr(by_flags.training, key)) is type(getattr(by_pairs.training, key))
    assert by_flags.training.learning_rate == 1e-4 and by_flags.lora.lora_rank == 4


def test_file_first_and_flags_override_it(tmp_path, tiny_model_dir):
    from lmforge.config.loader import load_config

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "dataset": "numbers",
                                        "output_dir": str(tmp_path / "o"), "learning_rate": 1e-3, "lora_rank": 8}))
    argv = ["--learning_rate", "5e-5", str(cfg_file), "--lora_rank=2", "--plot_loss"]
    converted = flags_to_overrides(argv)
    assert converted[0] == str(cfg_file)  # the file moves first, so every flag overrides its keys
    cfg = load_config(converted[0], converted[1:])
    assert cfg.training.learning_rate == 5e-5 and cfg.lora.lora_rank == 2 and cfg.finetuning.plot_loss is True


def test_command_options_pass_through():
    assert config_arguments("chat", ["c.yaml", "--system", "Be brief.", "--template", "qwen"]) == [
        "c.yaml", "template=qwen", "--system", "Be brief."]
    assert config_arguments("api", ["--port", "9000", "c.yaml", "--host=0.0.0.0"]) == [
        "c.yaml", "--port", "9000", "--host=0.0.0.0"]
    assert config_arguments("train", ["c.yaml", "--help", "lora"]) == ["c.yaml", "--help", "lora"]
    assert config_arguments("data", ["preview", "--x"]) == ["preview", "--x"]


def test_a_value_key_needs_a_value():
    with pytest.raises(ConfigError, match="--learning_rate needs a value"):
        flags_to_overrides(["--learning_rate", "--do_train"])


def test_unknown_flag_is_did_you_mean(tmp_path, capsys, tiny_model_dir):
    rc = main(["train", "--stage", "sft", "--model_name_or_path", str(tiny_model_dir), "--dataset", "numbers",
               "--output_dir", str(tmp_path / "o"), "--lora_rnak", "8"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "lora_rnak" in err and "lora_rank" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


def test_llamafactory_shell_line_trains(tmp_path, tiny_model_dir, data_dir):
    # LLaMA-Factory's README command line (`llamafactory-cli train --stage sft --do_train ...`), with only the
    # command name, paths, sizes and fp16 (no GPU here) changed.
    line = (f"--stage sft --do_train --model_name_or_path {tiny_model_dir} --dataset numbers "
            f"--dataset_dir {data_dir} --template qwen --finetuning_type lora --lora_target all "
            f"--output_dir {tmp_path / 'saves'} --overwrite_cache --overwrite_output_dir --cutoff_len 64 "
            "--per_device_train_batch_size 4 --gradient_accumulation_steps 1 --lr_scheduler_type cosine "
            "--logging_steps 1 --save_steps 1000 --learning_rate 5e-4 --max_steps 2 --plot_loss --report_to none "
            f"--data_cache_dir {tmp_path / 'cache'} --disable_tqdm true")
    assert main(["train", *shlex.split(line)]) == 0
    out = tmp_path / "saves"
    assert (out / "adapter_model.safetensors").is_file()
    rows = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
