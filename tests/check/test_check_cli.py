"""`lmforge check` end to end through `main(argv)` on a tiny LoRA run: config errors, the verdict table and exit
code, both reports, determinism for a seed."""

from __future__ import annotations

import json

import yaml

from lmforge.cli import main

PROBES = ["template_roundtrip", "serve_parity", "termination"]


def write(tmp_path, name="check.yaml", **keys) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(keys))
    return str(path)


def test_config_errors_are_one_line_exit_2(tmp_path, tiny_model_dir, capsys):
    bad_probe = write(tmp_path, model_name_or_path=str(tiny_model_dir), check={"probes": ["terminaton"]})
    assert main(["check", bad_probe]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "check.probes" in err and "termination" in err
    bad_key = write(tmp_path, model_name_or_path=str(tiny_model_dir), check={"termination": {"fail_belo": 0.5}})
    assert main(["check", bad_key]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "check.termination.fail_belo" in err and "fail_below" in err
    assert main(["check", bad_key, "check={probe: 1}"]) == 2
    assert "check.probe" in capsys.readouterr().err
    # LLaMA-Factory's flag form with no file at all: the keys alone make the config
    assert main(["check", "--model_name_or_path", str(tiny_model_dir), "--check.probes", "[terminaton]"]) == 2
    assert "check.probes" in capsys.readouterr().err


def test_check_of_a_tiny_run_writes_reports_and_fails_termination(tmp_path, run_dir, capsys):
    out = tmp_path / "report"
    cfg = write(tmp_path, adapter_name_or_path=str(run_dir),  # the base and template come from the run info
                check={"probes": PROBES, "samples": 3, "max_new_tokens": 12, "output_dir": str(out)})
    assert main(["check", cfg]) == 1  # an untrained tiny model does not stop: termination FAILs
    printed = capsys.readouterr().out
    rows = {line.split("|")[0].strip(): line.split("|")[-1].strip() for line in printed.splitlines() if "|" in line}
    assert rows["template_roundtrip"] == "PASS" and rows["serve_parity"] == "PASS", printed
    assert rows["termination"] == "FAIL", printed
    assert "termination (FAIL)" in printed
    report = json.loads((out / "check_report.json").read_text())
    verdicts = {r["name"]: r for r in report["results"]}
    assert verdicts["template_roundtrip"]["value"] == 1.0 and verdicts["serve_parity"]["value"] == 1.0
    assert verdicts["termination"]["examples"] and "base_stopped" in verdicts["termination"]["details"]
    assert any("validation split" in n for n in report["notes"])
    sources = report["samples"]["3"]
    assert len(sources) == 3 and all(s.startswith(str(run_dir.parent / "numbers.json") + ":") for s in sources)
    page = (out / "check_report.html").read_text()
    assert "<table>" in page and "FAIL" in page and "<script" not in page

    again = write(tmp_path, "again.yaml", adapter_name_or_path=str(run_dir),
                  check={"probes": ["termination"], "samples": 3, "max_new_tokens": 12,
                         "termination": {"compare_base": False}, "output_dir": str(tmp_path / "again")})
    assert main(["check", again]) == 1
    repeat = json.loads((tmp_path / "again" / "check_report.json").read_text())
    assert repeat["samples"] == report["samples"]  # the same seed draws the same records
    assert [e["output"] for e in repeat["results"][0]["examples"]] == \
        [e["output"] for e in verdicts["termination"]["examples"]]


def test_a_crashing_probe_is_its_fail_and_the_others_run(tmp_path, tiny_model_dir, capsys):
    from lmforge.check.probe import PROBES as REGISTRY, Probe
    from lmforge.check.runner import probe_catalog

    probe_catalog()

    def broken(ctx, settings):
        raise RuntimeError("a bug")

    REGISTRY.add("broken_probe", Probe("broken_probe", "crashes", broken, default_on=False))
    try:
        cfg = write(tmp_path, model_name_or_path=str(tiny_model_dir), template="qwen",
                    check={"probes": ["broken_probe", "termination"], "samples": 2, "max_new_tokens": 4,
                           "termination": {"fail_below": 0.0, "loop_fail_above": 1.0}})
        # dotted overrides reach into the check: mapping
        assert main(["check", cfg, "check.termination.warn_below=0.0", f"check.output_dir={tmp_path / 'r'}"]) == 1
    finally:
        REGISTRY.unregister("broken_probe")
    printed = capsys.readouterr().out
    assert "RuntimeError: a bug" in printed
    report = json.loads((tmp_path / "r" / "check_report.json").read_text())
    assert [r["verdict"] for r in report["results"]] == ["FAIL", "PASS"]
    assert report["samples"]["2"][0].startswith("generated:0:")  # only a model: generic prompts
