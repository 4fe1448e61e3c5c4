"""Callbacks driven by hand: synthetic batches, logs and a fake clock, checked against exact numbers."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from lmforge.train.callbacks import (
    LOG_FILE,
    LogWriterCallback,
    LossPlotCallback,
    ThroughputCallback,
    count_batch_tokens,
    move_to_front,
    read_log,
)
from lmforge.train.callbacks.throughput import _sum_over_ranks
from lmforge.train.plotting import auto_smoothing, ema_smooth, plot_curve
from lmforge.types import IGNORE_INDEX

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_batch() -> dict[str, torch.Tensor]:
    """2 x 8 batch: 10 real tokens of 16 positions; 4 supervised labels after the causal shift.

    Row 0 also has a label at position 0, which the shift makes unpredictable: it must not count.
    """
    mask = torch.tensor([[1] * 6 + [0] * 2, [1] * 4 + [0] * 4])
    labels = torch.full((2, 8), IGNORE_INDEX)
    labels[0, 0] = 7  # dropped by the shift
    labels[0, 4:6] = 5
    labels[1, 2:4] = 5
    return {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": mask, "labels": labels}


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), report_to="none")


def log(callbacks, args, state, logs):
    """What Trainer.log does: record a copy in log_history, then run on_log in list order."""
    state.log_history.append({**logs, "step": state.global_step})
    for callback in callbacks:
        callback.on_log(args, state, TrainerControl(), logs=logs)
    return logs


# -- token counting -----------------------------------------------------------------------------------


def test_count_batch_tokens_exact():
    assert count_batch_tokens(make_batch()).tolist() == [10, 4, 16]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_counting_cuda_batches_never_syncs():
    # Counting runs on every micro-batch; a host-device sync there would stall the training loop.
    from lmforge.arith.flops import ModelFlops

    batch = {k: v.cuda() for k, v in make_batch().items()}
    packed = {
        "input_ids": torch.ones(1, 9, dtype=torch.long, device="cuda"),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]], device="cuda"),
        "_token_mask": torch.ones(1, 9, dtype=torch.bool, device="cuda"),
    }
    # A sliding-window layer too, so the per-window length sums are exercised.
    cb = ThroughputCallback(flops=ModelFlops(layer_params=(1,), head_params=0, attn_dims=(1,), windows=(2,)))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            cb.observe_batch(batch)
        cb.observe_batch(packed)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # 3 x (10 tokens, 4 supervised, 16 positions, Σlen² 52, Σlen·min(len, 2) 20) + the packed row.
    assert cb._total.tolist() == [39, 12, 57, 3 * 52 + 29, 3 * 20 + 18]


def test_count_packed_batches():
    # Neat packing: attention_mask holds sequence indices; only zeros are padding.
    packed = {
        "input_ids": torch.ones(1, 8, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0]]),
        "labels": torch.tensor([[-100, 4, 4, -100, 4, -100, -100, -100]]),
    }
    assert count_batch_tokens(packed).tolist() == [6, 3, 8]
    # Padding-free packing: no attention_mask, every position is a token.
    flat = {
        "input_ids": torch.ones(1, 5, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1]]),
        "labels": torch.tensor([[-100, 1, 1, -100, 1]]),
    }
    assert count_batch_tokens(flat).tolist() == [5, 3, 5]
    assert count_batch_tokens({"chosen_input_ids": torch.ones(2, 2)}) is None


# -- throughput ----------------------------------------------------------------------------------------


def test_throughput_rates_skip_warmup_and_eval_time(args):
    clock = FakeClock()
    cb = ThroughputCallback(warmup_steps=1, clock=clock)
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(args, state, control)

    cb.observe_batch(make_batch())  # step 1: warm-up, counted in totals only
    clock.t = 5.0
    state.global_step = 1
    cb.on_step_end(args, state, control)

    for t, n_micro in ((6.0, 2), (7.0, 1)):  # steps 2 and 3, step 2 with 2 micro-batches
        for _ in range(n_micro):
            cb.observe_batch(make_batch())
        clock.t = t
        state.global_step += 1
        cb.on_step_end(args, state, control)

    clock.t = 17.0  # 10 s of evaluation: not training time
    log([cb], args, state, {"eval_loss": 1.0, "epoch": 0.5})
    cb.on_evaluate(args, state, control)

    cb.observe_batch(make_batch())
    clock.t = 18.0
    state.global_step += 1
    cb.on_step_end(args, state, control)
    logs = log([cb], args, state, {"loss": 2.0, "learning_rate": 1e-3, "epoch": 1.0})

    # 4 timed micro-batches (steps 2-4) in 3 timed seconds; totals include the warm-up batch.
    assert logs["throughput/tokens_per_s"] == pytest.approx(40 / 3, abs=0.01)
    assert logs["throughput/tokens_per_s_per_device"] == pytest.approx(40 / 3, abs=0.01)
    assert logs["throughput/supervised_tokens_per_s"] == pytest.approx(16 / 3, abs=0.01)
    assert logs["throughput/padding_fraction"] == pytest.approx(6 / 16)
    assert logs["throughput/tokens_total"] == 50
    assert logs["throughput/supervised_tokens_total"] == 20
    assert state.log_history[-1]["throughput/tokens_total"] == 50  # mirrored for trainer_state.json
    assert "throughput/tokens_total" not in state.log_history[0]  # the eval log is left alone

    # Next interval: one step of 2 s with two batches.
    cb.observe_batch(make_batch())
    cb.observe_batch(make_batch())
    clock.t = 20.0
    state.global_step += 1
    cb.on_step_end(args, state, control)
    logs = log([cb], args, state, {"loss": 1.5})
    assert logs["throughput/tokens_per_s"] == pytest.approx(10.0)
    assert logs["throughput/tokens_total"] == 70

    summary = log([cb], args, state, {"train_runtime": 20.0, "train_loss": 1.7})
    assert summary["throughput/tokens_total"] == 70
    assert "throughput/tokens_per_s" not in summary


def test_throughput_log_during_warmup_has_no_rate(args):
    cb = ThroughputCallback(warmup_steps=2, clock=FakeClock())
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(args, state, control)
    cb.observe_batch(make_batch())
    state.global_step = 1
    cb.on_step_end(args, state, control)
    logs = log([cb], args, state, {"loss": 3.0})
    assert "throughput/tokens_per_s" not in logs
    assert logs["throughput/padding_fraction"] == pytest.approx(0.375)
    assert logs["throughput/tokens_total"] == 10


def test_throughput_without_observed_batches_adds_nothing(args):
    cb = ThroughputCallback(warmup_steps=0, clock=FakeClock())
    state = TrainerState()
    cb.on_train_begin(args, state, TrainerControl())
    logs = log([cb], args, state, {"loss": 3.0})
    assert logs == {"loss": 3.0}


def test_throughput_totals_continue_after_resume(args):
    cb = ThroughputCallback(warmup_steps=0, clock=FakeClock())
    state = TrainerState(
        global_step=4,
        log_history=[
            {"loss": 2.0, "step": 4, "throughput/tokens_total": 100, "throughput/supervised_tokens_total": 30}
        ],
    )
    cb.on_train_begin(args, state, TrainerControl())
    cb.observe_batch(make_batch())
    state.global_step = 5
    logs = log([cb], args, state, {"loss": 1.0})
    assert logs["throughput/tokens_total"] == 110
    assert logs["throughput/supervised_tokens_total"] == 34


def test_throughput_keys_reach_the_writer_placed_after_it(args, tmp_path):
    clock = FakeClock()
    cb = ThroughputCallback(warmup_steps=0, clock=clock)
    writer = LogWriterCallback(tmp_path, clock=clock)
    state, control = TrainerState(), TrainerControl()
    for callback in (cb, writer):
        callback.on_train_begin(args, state, control)
    cb.observe_batch(make_batch())
    clock.t = 2.0
    state.global_step = 1
    cb.on_step_end(args, state, control)
    log([cb, writer], args, state, {"loss": 1.0})
    (row,) = read_log(tmp_path / LOG_FILE)
    assert row["tokens_per_s"] == 5.0 and row["throughput/tokens_per_s"] == 5.0


def test_move_to_front():
    class Handler:
        pass

    handler = Handler()
    cb = ThroughputCallback()
    handler.callbacks = ["flow", "tensorboard", cb, "writer"]
    move_to_front(handler, cb)
    assert handler.callbacks == [cb, "flow", "tensorboard", "writer"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_sum(rank: int, port: int, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # Ranks see different token counts (packing): sums must be exact, not rank 0 times two.
        results.put((rank, _sum_over_ranks(torch.tensor([10 * (rank + 1), rank, 16]))))
    finally:
        torch.distributed.destroy_process_group()


def test_counts_are_summed_over_ranks():
    # fork, not spawn: a spawned child re-imports transformers (seconds); nothing here touches CUDA.
    ctx = torch.multiprocessing.get_context("fork")
    results = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_sum, args=(rank, port, results)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    got = dict(results.get() for _ in procs)
    assert got[0] == got[1] == ([30, 1, 32], 2)


# -- trainer_log.jsonl ---------------------------------------------------------------------------------


def test_log_writer_lines_and_keys(args, tmp_path):
    clock = FakeClock(100.0)
    writer = LogWriterCallback(tmp_path, clock=clock)
    state = TrainerState(max_steps=10)
    writer.on_train_begin(args, state, TrainerControl())
    state.global_step, clock.t = 2, 103.5
    log(
        [writer],
        args,
        state,
        {
            "loss": 2.5,
            "grad_norm": 0.7,
            "learning_rate": 1e-4,
            "epoch": 0.2,
            "throughput/tokens_per_s": 321.0,
            "throughput/padding_fraction": 0.1,
        },
    )
    # The line is on disk as soon as on_log returns (a crash after this keeps it).
    assert len((tmp_path / LOG_FILE).read_text().splitlines()) == 1
    log([writer], args, state, {"eval_loss": 2.0, "eval_runtime": 1.0, "epoch": 0.2})
    rows = read_log(tmp_path / LOG_FILE)
    import resource

    peak = rows[0].pop("peak_rss_gib")  # this process's peak RSS so far, in GiB
    assert 0 < peak <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 + 1e-3
    assert rows[0] == {
        "step": 2,
        "total_steps": 10,
        "epoch": 0.2,
        "loss": 2.5,
        "lr": 1e-4,
        "grad_norm": 0.7,
        "tokens_per_s": 321.0,
        "elapsed_s": 3.5,
        "throughput/tokens_per_s": 321.0,
        "throughput/padding_fraction": 0.1,
    }
    assert list(rows[0])[:4] == ["step", "total_steps", "epoch", "loss"]
    assert rows[1]["eval_loss"] == 2.0 and rows[1]["eval_runtime"] == 1.0 and "loss" not in rows[1]


def test_log_writer_only_on_main_process(args, tmp_path):
    writer = LogWriterCallback(tmp_path)
    state = TrainerState(is_world_process_zero=False)
    writer.on_train_begin(args, state, TrainerControl())
    log([writer], args, state, {"loss": 1.0})
    assert not (tmp_path / LOG_FILE).exists()


def _crashed_run(path, last_step: int) -> None:
    with open(path, "w") as f:
        f.writelines(
            json.dumps({"step": step, "loss": 1.0 / step, "elapsed_s": float(step)}) + "\n"
            for step in range(1, last_step + 1)
        )
        f.write('{"step": 99, "lo')  # torn line from the crash


def test_log_writer_resume_drops_lines_after_the_checkpoint(args, tmp_path):
    _crashed_run(tmp_path / LOG_FILE, last_step=10)
    clock = FakeClock(50.0)
    writer = LogWriterCallback(tmp_path, clock=clock)
    state = TrainerState(global_step=6)  # resumed from checkpoint-6
    writer.on_train_begin(args, state, TrainerControl())
    assert [r["step"] for r in read_log(tmp_path / LOG_FILE)] == [1, 2, 3, 4, 5, 6]
    state.global_step, clock.t = 7, 52.0
    log([writer], args, state, {"loss": 0.1})
    rows = read_log(tmp_path / LOG_FILE)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert rows[-1]["elapsed_s"] == 8.0  # 6 s before the crash + 2 s since


def test_log_writer_fresh_start_replaces_old_log(args, tmp_path):
    _crashed_run(tmp_path / LOG_FILE, last_step=3)
    writer = LogWriterCallback(tmp_path, clock=FakeClock())
    writer.on_train_begin(args, TrainerState(), TrainerControl())
    assert read_log(tmp_path / LOG_FILE) == []


# -- plotting ------------------------------------------------------------------------------------------


def test_ema_matches_hand_computed_values():
    # w = 0.5: ema = 0.5, 1.25, 2.125; debias by 1 - 0.5**t = 0.5, 0.75, 0.875.
    assert ema_smooth([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert ema_smooth([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])  # debiased: no pull to 0
    assert ema_smooth([1.0, 5.0], 0.0) == [1.0, 5.0]
    with pytest.raises(ValueError):
        ema_smooth([1.0], 1.0)
    assert auto_smoothing(5) == 0.0
    assert auto_smoothing(100) == pytest.approx(0.8)
    assert auto_smoothing(10_000) == 0.99


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (540, 960)  # 8 x 4.5 in at 120 dpi


@pytest.mark.parametrize("n", [1, 10_000])
def test_plot_curve_writes_a_png(tmp_path, n):
    steps = list(range(1, n + 1))
    values = [2.0 * math.exp(-s / 2000) + 0.1 * math.sin(s) for s in steps]
    out = plot_curve(steps, values, "training loss", "loss", tmp_path / "plots" / "loss.png")
    _assert_png(out)
    assert os.listdir(out.parent) == ["loss.png"]  # the temporary file was renamed away


def test_plot_curve_notes_non_finite_values(tmp_path):
    out = plot_curve([1, 2, 3], [1.0, float("nan"), 0.5], "t", "loss", tmp_path / "nan.png")
    _assert_png(out)
    with pytest.raises(ValueError):
        plot_curve([1, 2], [1.0], "t", "loss", tmp_path / "bad.png")


def test_loss_plot_callback(args, tmp_path):
    cb = LossPlotCallback(tmp_path, every_n_logs=2)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 1
    log([cb], args, state, {"loss": 2.0})
    assert not (tmp_path / "training_loss.png").exists()
    state.global_step = 2
    log([cb], args, state, {"loss": 1.5})
    _assert_png(tmp_path / "training_loss.png")
    log([cb], args, state, {"eval_loss": 1.7})
    cb.on_evaluate(args, state, control)
    _assert_png(tmp_path / "eval_loss.png")
    (tmp_path / "training_loss.png").unlink()
    cb.on_train_end(args, state, control)
    _assert_png(tmp_path / "training_loss.png")


def test_loss_plot_callback_silent_off_main_process(args, tmp_path):
    cb = LossPlotCallback(tmp_path, every_n_logs=1)
    state = TrainerState(is_world_process_zero=False)
    log([cb], args, state, {"loss": 2.0})
    cb.on_train_end(args, state, TrainerControl())
    assert not list(tmp_path.glob("*.png"))


# -- with a real transformers Trainer --------------------------------------------------------------------


def test_callbacks_in_a_real_trainer_run(tmp_path):
    """One epoch of a 2-layer model: keys reach the file, totals equal the dataset's token counts."""
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    class ObservingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            throughput.observe_batch(inputs)  # the one-line hook BaseTrainer also has
            return super().training_step(model, inputs, num_items_in_batch)

    def collate(rows):
        longest = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, :2] = IGNORE_INDEX  # a 2-token "prompt"
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    torch.manual_seed(0)
    rows = [list(range(1, 4 + i % 5)) for i in range(16)]  # lengths 3..7
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=16,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    throughput = ThroughputCallback()
    trainer = ObservingTrainer(
        model=model,
        args=args,
        data_collator=collate,
        train_dataset=rows,
        eval_dataset=rows[:4],
        callbacks=[throughput, LogWriterCallback(tmp_path), LossPlotCallback(tmp_path)],
    )
    trainer.train()

    rows_out = read_log(tmp_path / LOG_FILE)
    train_rows = [r for r in rows_out if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert [r["step"] for r in rows_out if "eval_loss" in r] == [2, 4]
    assert "tokens_per_s" not in train_rows[0]  # step 1 is warm-up
    assert all(r["tokens_per_s"] > 0 and r["throughput/supervised_tokens_per_s"] > 0 for r in train_rows[1:])
    # MFU against a calibrated CPU peak (plain TrainingArguments: no peak_tflops, calibration on).
    assert throughput.flops is not None and throughput.peak_flops > 0
    assert all(r["throughput/tflops_per_device"] > 0 and 0 < r["throughput/mfu"] < 1 for r in train_rows[1:])
    total = sum(len(r) for r in rows)
    assert train_rows[-1]["throughput/tokens_total"] == total
    assert train_rows[-1]["throughput/supervised_tokens_total"] == total - 2 * len(rows)
    _assert_png(tmp_path / "training_loss.png", min_bytes=2_000)
    _assert_png(tmp_path / "eval_loss.png", min_bytes=2_000)
