"""`--help` of every command answers without torch; `lmforge train --help` documents every config key by group."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from lmforge.cli import main
from lmforge.config.help import group_keys, group_names, render_help
from lmforge.config.loader import KEY_GROUP, LIGHT_GROUPS
from lmforge.config.training_fields import training_fields


def test_every_config_field_has_help_text():
    missing = [f"{group}.{f.name}" for group, cls in LIGHT_GROUPS.items() for f in dataclasses.fields(cls)
               if f.init and not str(f.metadata.get("help", "")).strip()]
    missing += [f"training.{name}" for name, spec in training_fields()["fields"].items() if not spec["help"]]
    assert missing == []


def test_train_help_lists_every_key_by_group_with_type_default_and_help(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for group in LIGHT_GROUPS:
        for key in group_keys(group):
            assert f"  {key.name} " in text, key.name
    assert "  lora_rank              int = 8\n      Rank r of the update matrices." in text
    assert "  finetuning_type  full|freeze|lora = 'lora'" in text
    assert "mix_strategy" in text and "concat|interleave_under|interleave_over|interleave_once = 'concat'" in text
    # lmforge's own training keys and the common transformers ones, not all 130
    assert "  selective_checkpointing " in text and "  learning_rate " in text and "  hub_strategy " not in text


def test_help_of_one_group_and_help_all(capsys):
    assert main(["train", "--help", "lora"]) == 0
    lora = capsys.readouterr().out
    assert "  lora_dropout " in lora and "  learning_rate " not in lora and "  freeze_trainable_layers " not in lora
    assert main(["train", "--help-all"]) == 0
    everything = capsys.readouterr().out
    assert all(f"  {name} " in everything for name in KEY_GROUP)  # every key any config may hold
    assert main(["train", "--help", "lroa"]) == 2
    assert "did you mean 'lora'?" in capsys.readouterr().err


def test_help_groups_cover_every_key_once():
    listed = [key.name for group in group_names() for key in group_keys(group)]
    assert sorted(set(listed)) == sorted(KEY_GROUP)
    assert render_help("loss").count("loss_chunk_size") == 1


@pytest.mark.parametrize("command", [["train"], ["train", "--help-all"], ["chat"], ["api"], ["export"], ["data"],
                                     ["data", "validate"], ["estimate"], ["estimate", "mfu"], ["tokenize"],
                                     ["create-model"], ["demo"], []])
def test_every_help_answers_without_importing_torch(command):
    argv = command + (["--help"] if "--help-all" not in command else [])
    code = ("import sys\nfrom lmforge.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint('RESULT', rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "RESULT 0 False False", (done.stdout[-500:], done.stderr[-500:])
    assert "usage" in done.stdout.lower()
