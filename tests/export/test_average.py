"""`lmforge average`: checkpoints of a real tiny run averaged; identical inputs come back bit for bit, the average
of two is their mean tensor by tensor, and the result loads through from_pretrained (full) or PEFT (adapters)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmforge.cli import main


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("average")
    data = root / "data"
    data.mkdir()
    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i} {i}"} for i in range(12)]
    (data / "nums.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"nums": {"file_name": "nums.json"}}))
    runs = {}
    for kind in ("full", "lora"):
        config = root / f"{kind}.yaml"
        config.write_text(yaml.safe_dump({
            "model_name_or_path": str(tiny_model_dir), "stage": "sft", "finetuning_type": kind, "template": "qwen",
            "dataset_dir": str(data), "dataset": "nums", "output_dir": str(root / kind), "max_steps": 3,
            "save_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "report_to": "none",
            "disable_tqdm": True}))
        assert main(["train", str(config)]) == 0
        runs[kind] = sorted((root / kind).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return runs


def weights_of(path, name="model.safetensors"):
    return load_file(str(path / name))


def test_identical_checkpoints_average_to_themselves_and_two_to_their_mean(checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    first, second, _third = checkpoints["full"]
    assert main(["average", str(first), str(first), str(first), "--output", str(tmp_path / "same")]) == 0
    original, same = weights_of(first), weights_of(tmp_path / "same")
    assert original.keys() == same.keys() and all(torch.equal(original[k], same[k]) for k in original)

    assert main(["average", str(first), str(second), "--output", str(tmp_path / "mean")]) == 0
    a, b, mean = weights_of(first), weights_of(second), weights_of(tmp_path / "mean")
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed  # the two checkpoints differ, so the test can see an average
    for key in a:
        expected = ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)
        assert torch.equal(mean[key], expected), key
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mean")  # a loadable model, config and all
    assert torch.equal(model.state_dict()["model.norm.weight"], mean["model.norm.weight"])
    assert not (tmp_path / "mean" / "optimizer.pt").exists()  # trainer state is not copied


def test_ema_weights_and_adapters(checkpoints, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ckpts = checkpoints["lora"]
    assert main(["average", *map(str, ckpts), "--ema", "0.5", "--output", str(tmp_path / "ema")]) == 0
    tensors = [weights_of(c, "adapter_model.safetensors") for c in ckpts]
    ema = weights_of(tmp_path / "ema", "adapter_model.safetensors")
    weights = [0.25 / 1.75, 0.5 / 1.75, 1 / 1.75]  # 0.5^2, 0.5, 1, normalised
    for key in ema:
        expected = sum(w * t[key].double() for w, t in zip(weights, tensors)).to(ema[key].dtype)
        assert torch.allclose(ema[key], expected, atol=1e-7), key
    base = AutoModelForCausalLM.from_pretrained(json.loads((ckpts[-1] / "adapter_config.json").read_text())[
        "base_model_name_or_path"])
    PeftModel.from_pretrained(base, tmp_path / "ema")  # loads as an adapter


def test_mismatched_or_too_few_checkpoints_are_refused(checkpoints, tmp_path, capsys):
    assert main(["average", str(checkpoints["full"][0]), "--output", str(tmp_path / "x")]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert main(["average", str(checkpoints["full"][0]), str(checkpoints["lora"][0]), "--output",
                 str(tmp_path / "x")]) == 2
    assert "must come from the same run setup" in capsys.readouterr().err
