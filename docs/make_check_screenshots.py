"""Regenerate the README's two `lmforge check` screenshots: docs/check_report_fail.png and docs/check_report_pass.png.

    python docs/make_check_screenshots.py --work /tmp/check_shots          # ~3 min on 2 CPU cores
    python docs/make_check_screenshots.py --work /tmp/check_shots --chromium /usr/bin/chromium

* pass: the demo's fine-tuned model (`lmforge.demo.run_demo`, built into `--work/demo` unless it is there; the
  check.yaml it writes), the default suite;
* fail: a tiny-qwen2 fully fine-tuned for 100 epochs on six letter-shift records until it recites them (the
  reciter of tests/check/test_bad_models.py), the default suite: prompt_edits FAILs.

Each check_report.html is rendered by headless Chromium (Debian: `apt-get install chromium`) at 1200 px wide and
saved as a palette PNG (Pillow) to stay small. A docs artifact: no test needs Chromium.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import subprocess
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent
NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Farah"]


def passing_report(work: Path) -> Path:
    from lmforge.cli import main
    from lmforge.demo import run_demo

    root = work / "demo"
    if not (root / "check.yaml").is_file():
        run_demo(root, seed=0, say=lambda _: None)
    out = work / "pass_report"
    main(["check", str(root / "check.yaml"), f"check.output_dir={out}"])
    return out / "check_report.html"


def failing_report(work: Path) -> Path:
    from lmforge.cli import main
    from lmforge.model.from_config import create_model

    root = work / "reciter"
    root.mkdir(parents=True, exist_ok=True)
    base = root / "base"
    if not (base / "config.json").is_file():
        create_model("tiny-qwen2", base, seed=0)
    rng = random.Random(0)
    data = []
    for name in NAMES:
        seq = [rng.choice(string.ascii_lowercase) for _ in range(4)]
        shifted = [chr((ord(c) - 97 + 1) % 26 + 97) for c in seq]
        data.append({"instruction": f"{name} wrote {' '.join(seq)}. Shift each letter by one: {' '.join(seq)}",
                     "input": "", "output": "Shifted: " + " ".join(shifted)})
    (root / "reciter.json").write_text(json.dumps(data))
    train = {"model_name_or_path": str(base), "dataset": str(root / "reciter.json"), "template": "qwen",
             "stage": "sft", "finetuning_type": "full", "output_dir": str(root / "sft"), "cutoff_len": 128,
             "data_cache_dir": str(root / "cache"), "save_strategy": "no", "disable_tqdm": True, "report_to": "none",
             "seed": 42, "per_device_train_batch_size": 6, "num_train_epochs": 100, "learning_rate": 5e-3,
             "lr_scheduler_type": "constant", "logging_steps": 50, "overwrite_output_dir": True}
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    if not (root / "sft" / "config.json").is_file():
        assert main(["train", str(root / "train.yaml")]) == 0
    out = work / "fail_report"
    check = {"model_name_or_path": str(root / "sft"), "check": {"samples": 6, "output_dir": str(out)}}
    (root / "check.yaml").write_text(yaml.safe_dump(check))
    main(["check", str(root / "check.yaml")])
    return out / "check_report.html"


def screenshot(chromium: str, page: Path, png: Path, height: int) -> None:
    from PIL import Image

    raw = png.with_suffix(".raw.png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", "--hide-scrollbars", f"--screenshot={raw}", f"--window-size=1200,{height}",
                    page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    Image.open(raw).convert("RGB").quantize(colors=64).save(png, optimize=True)
    raw.unlink()
    print(f"{png}: {png.stat().st_size // 1024} KiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/check_shots"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args()
    screenshot(args.chromium, failing_report(args.work), DOCS / "check_report_fail.png", args.height)
    screenshot(args.chromium, passing_report(args.work), DOCS / "check_report_pass.png", args.height)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
