"""`lmforge webui`: the real server on 127.0.0.1 (uvicorn on a thread), real `lmforge train` subprocesses, and a real
headless Chromium driven by Playwright for what a user does in the browser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from lmforge.errors import ConfigError
from lmforge.webui.app import create_app
from lmforge.webui.server import webui_main

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SCREENSHOT_DIR = os.environ.get("LMFORGE_SCREENSHOT_DIR")  # default: the test session's temporary directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(root: Path, token: str | None = None):
    import uvicorn

    port = free_port()
    app = create_app(root, token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        app.state.runs.close()
        server.should_exit = True
        thread.join(timeout=30)


def request(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition, timeout: float = 180, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


@pytest.fixture
def root(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say {w}", "input": "", "output": f"{w}, {w}."} for w in
            ("red", "blue", "green", "cat", "dog", "sun", "moon", "tree")]
    (data / "colours.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"colours": {"file_name": "colours.json"}}))
    return tmp_path


def write_mc_task(tasks: Path) -> None:
    """A 4-question multiple-choice task in lm-eval's YAML layout."""
    tasks.mkdir()
    rows = [{"question": f"{a} + 1 =", "choices": [str(a + 1), str(a + 2)], "answer": 0} for a in range(4)]
    (tasks / "mc_tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "mc_tiny.yaml").write_text(
        "task: mc_tiny\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tasks / 'mc_tiny.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: answer\ndoc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n")


def run_values(model: Path, **extra) -> dict:
    return {"model_name_or_path": str(model), "template": "qwen", "stage": "sft", "finetuning_type": "lora",
            "dataset_dir": "data", "dataset": "colours", "output_dir": "run-1", "max_steps": 2, "logging_steps": 1,
            "learning_rate": 1e-3, "report_to": "none", **extra}


def test_exposed_needs_a_token_and_every_request_checks_it(root):
    with pytest.raises(ConfigError, match="set --token"):
        webui_main(["--host", "0.0.0.0", "--root", str(root)])
    with serving(root, token="s3cret") as (base, _app):
        assert request(f"{base}/api/runs")[0] == 401
        assert request(f"{base}/api/runs", headers={"X-Lmforge-Token": "wrong"})[0] == 401
        assert request(f"{base}/api/runs?token=s3cret") == (200, {"runs": []})
        with urllib.request.urlopen(f"{base}/?token=s3cret") as page:  # the cookie it sets carries the token on
            assert b"lmforge" in page.read() and "lmforge_webui_token=s3cret" in page.headers["set-cookie"]


def test_validation_names_the_key_and_a_failed_or_stopped_run_reports_itself(root, tiny_model_dir):
    with serving(root) as (base, _app):
        status, checked = request(f"{base}/api/validate", run_values(tiny_model_dir, learning_rate="1e-3x",
                                                                     lerning_rate=1))
        assert status == 200 and not checked["ok"]
        assert set(checked["errors"]) == {"lerning_rate"} and "did you mean 'learning_rate'" in checked["errors"]["lerning_rate"]
        checked = request(f"{base}/api/validate", run_values(tiny_model_dir, learning_rate="1e-3x"))[1]
        assert checked["errors"] == {"learning_rate": "key 'learning_rate' expects float, got '1e-3x'"}
        assert request(f"{base}/api/runs", run_values(tiny_model_dir, learning_rate="1e-3x"))[0] == 400
        assert request(f"{base}/api/runs")[1] == {"runs": []}  # nothing started

        # a run that crashes (its dataset file is gone) shows the CLI's one-line error; the UI stays up
        (root / "data" / "colours.json").rename(root / "data" / "moved.json")
        run_id = request(f"{base}/api/runs", run_values(tiny_model_dir, output_dir="broken"))[1]["id"]
        state = wait_for(lambda: (s := request(f"{base}/api/run?id={run_id}")[1])["status"] != "running" and s)
        assert state["status"] == "failed" and "colours.json" in state["error"], state
        (root / "data" / "moved.json").rename(root / "data" / "colours.json")

        # Stop: SIGTERM ends training at the step's end with a checkpoint kept
        run_id = request(f"{base}/api/runs", run_values(tiny_model_dir, output_dir="long", max_steps=2000,
                                                         save_steps=100000))[1]["id"]
        wait_for(lambda: request(f"{base}/api/run?id={run_id}")[1]["step"] >= 2)
        assert request(f"{base}/api/run/stop?id={run_id}", {})[1] == {"stopping": True}
        state = wait_for(lambda: (s := request(f"{base}/api/run?id={run_id}")[1])["status"] not in
                         ("running", "stopping") and s)
        checkpoints = sorted(p.name for p in (root / "long").glob("checkpoint-*"))
        assert state["status"] == "stopped" and len(checkpoints) == 1, (state, checkpoints)
        assert int(checkpoints[0].split("-")[1]) == state["step"] < 2000
        assert (root / "long" / checkpoints[0] / "adapter_model.safetensors").exists()

    # a second UI on the same root finds both runs on disk
    with serving(root) as (base, _app):
        found = {run["name"]: run for run in request(f"{base}/api/runs")[1]["runs"]}
        assert set(found) == {"broken", "long"} and found["long"]["step"] == state["step"]


# -- in a real browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path_factory.mktemp("screenshots")


def shot(page, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"webui_{name}.png"), full_page=True)
    assert (folder / f"webui_{name}.png").stat().st_size > 5000


@pytest.mark.slow
def test_train_from_the_browser_watch_the_loss_then_chat(root, tiny_model_dir, browser, screenshots):
    from lmforge.config import load_inference_config
    from lmforge.inference.engine import ChatEngine

    with serving(root) as (base, _app):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base)
        page.fill("#f-model_name_or_path", str(tiny_model_dir))
        page.dispatch_event("#f-model_name_or_path", "change")
        page.wait_for_function("document.querySelector('#f-template').options.length > 2")
        page.select_option("#f-template", "qwen")
        page.wait_for_function("document.querySelector('#f-dataset').value === 'colours'")
        page.fill("#f-max_steps", "2")
        page.fill("#f-logging_steps", "1")
        page.fill("#f-learning_rate", "0.001")
        page.wait_for_function("document.querySelector('#yaml').textContent.includes('max_steps: 2')")
        assert "template: qwen" in page.text_content("#yaml")
        page.click("#preview")  # lmforge data preview's page: the first sample, its answer marked as trained
        frame = page.frame_locator("#preview-frame")
        frame.locator("span.t").first.wait_for(timeout=60_000)
        trained = "".join(frame.locator("span.t").all_text_contents())
        assert "red, red." in trained and "Say red" not in trained, trained
        shot(page, screenshots, "train")
        page.click("#start")
        page.wait_for_selector("#watch.active")
        # the loss plot updates from trainer_log.jsonl while the run goes on
        page.wait_for_function("document.querySelectorAll('#loss-plot circle.point').length >= 2", timeout=180_000)
        page.wait_for_function("document.querySelector('#run-status').textContent === 'finished'", timeout=180_000)
        assert "step 2 / 2" in page.text_content("#run-figures")
        shot(page, screenshots, "watch")

        page.click("#tabs button[data-tab=chat]")
        page.fill("#chat-temperature", "0")
        page.fill("#chat-max_tokens", "8")
        page.fill("#chat-input", "Say red")
        page.click("#chat-send")
        page.wait_for_selector(".message.assistant[data-finish]", timeout=120_000)
        answer = page.text_content(".message.assistant")
        pieces = int(page.get_attribute(".message.assistant", "data-pieces"))
        shot(page, screenshots, "chat")
        page.click("#chat-clear")  # a fresh conversation: no message shown, none sent with the next one
        assert page.locator("#chat-log .message").count() == 0 and page.evaluate("chatHistory.length") == 0

        # Evaluate: lmforge eval on a local task, then lmforge check, each shown as a table
        write_mc_task(root / "tasks")
        page.click("#tabs button[data-tab=evaluate]")
        page.fill("#eval-tasks", "mc_tiny")
        page.fill("#eval-include_path", "tasks")
        page.click("#run-eval")
        page.wait_for_selector("#job-result td", timeout=180_000)
        cells = page.locator("#job-result td").all_text_contents()
        results = json.loads((root / "run-1" / "webui_eval" / "results.json").read_text())["results"]["mc_tiny"]
        assert cells[:3] == ["mc_tiny", "acc", f"{results['acc,none']:.4f}"], cells
        page.fill("#check-probes", "template_roundtrip")
        page.click("#run-check")
        page.wait_for_function("document.querySelector('#job-result td') && "
                               "document.querySelector('#job-result td').textContent === 'template_roundtrip'",
                               timeout=180_000)
        report = json.loads((root / "run-1" / "webui_check" / "check_report.json").read_text())["results"][0]
        assert page.locator("#job-result td").all_text_contents()[1] == report["verdict"]
        shot(page, screenshots, "evaluate")

        # Export: the adapter merged into a standalone model
        page.click("#tabs button[data-tab=export]")
        page.click("#run-export")
        page.wait_for_function("document.querySelector('#export-status').textContent.includes('finished')",
                               timeout=180_000)
        assert str(root / "run-1" / "exported") in page.text_content("#export-status")
        assert (root / "run-1" / "exported" / "model.safetensors").exists()
        shot(page, screenshots, "export")
        page.close()

    # the browser's answer is the one `lmforge chat` gives for the trained run (greedy, same engine)
    engine = ChatEngine(load_inference_config(None, [f"model_name_or_path={tiny_model_dir}",
                                                     f"adapter_name_or_path={root / 'run-1'}"]))
    expected = engine.reply([{"role": "user", "content": "Say red"}], temperature=0, max_new_tokens=8)
    engine.close()
    assert answer == expected and pieces >= 2, (answer, expected, pieces)


def test_a_misspelt_value_is_shown_beside_its_field_and_nothing_starts(root, tiny_model_dir, browser, screenshots):
    with serving(root) as (base, _app):
        page = browser.new_page()
        page.goto(base)
        page.fill("#f-model_name_or_path", str(tiny_model_dir))
        page.select_option("#f-finetuning_type", "lora")
        page.fill("#f-learning_rate", "1e-3x")
        page.wait_for_function("document.querySelector('#err-learning_rate').textContent.length > 0")
        assert page.text_content("#err-learning_rate") == "key 'learning_rate' expects float, got '1e-3x'"
        page.click("#start")
        page.wait_for_function("document.querySelector('#start-note').textContent.length > 0")
        assert page.text_content("#start-note") == "fix the messages above first"
        shot(page, screenshots, "validation")
        # a YAML file loaded into the form: its values fill the fields and are checked at once
        saved = root / "saved.yaml"
        saved.write_text(f"model_name_or_path: {tiny_model_dir}\nlearning_rate: 0.002\nnum_train_epochs: -1\n")
        page.set_input_files("#load-yaml", str(saved))
        page.wait_for_function("document.querySelector('#f-learning_rate').value === '0.002'")
        page.wait_for_function("document.querySelector('#err-num_train_epochs').textContent.length > 0")
        assert "num_train_epochs" in page.text_content("#err-num_train_epochs")
        assert page.text_content("#err-learning_rate") == ""
        page.close()
        assert request(f"{base}/api/runs")[1] == {"runs": []}
        assert not (root / "run-1").exists()
