"""Checkpoints that a crash or kill cannot corrupt.

transformers writes `checkpoint-N` in place, file by file: a kill during the save leaves a directory that
looks like the newest checkpoint but lacks the optimizer or trainer state, and `resume_from_checkpoint` then
fails or, worse, resumes from half a state. lmforge lets transformers write into `.staging/checkpoint-N`
and renames the finished directory to `checkpoint-N` (one `rename`, atomic on POSIX file systems). Old
checkpoints are rotated (`save_total_limit`) only after that rename, so the last complete checkpoint is
never deleted before a newer complete one exists. A non-finite model is never saved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import torch
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lmforge.errors import UserError
from lmforge.logging import get_logger

logger = get_logger(__name__)

STAGING_DIR = ".staging"
COMPLETE_MARKER = "trainer_state.json"  # written last by transformers' _save_checkpoint
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class NonFiniteModelError(UserError):
    """The weights hold NaN or inf values; they are not saved over a good checkpoint."""


class DamagedCheckpointError(UserError):
    """The checkpoint to resume from has no readable trainer state."""


def is_complete(path: Path) -> bool:
    return path.is_dir() and (path / COMPLETE_MARKER).is_file()


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step `checkpoint-N` that holds a trainer state; staging and partial directories are skipped."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and is_complete(child):
            found.append((int(match.group(1)), child))
        elif match:
            logger.warning("ignoring incomplete checkpoint %s (no %s)", child, COMPLETE_MARKER)
    return max(found)[1] if found else None


def check_trainer_state(checkpoint: Path) -> None:
    """Raise unless `checkpoint`'s trainer_state.json is what transformers can resume from.

    A damaged state is an error rather than a silent fall-back to an older checkpoint: resuming from the
    older one would let rotation (`save_total_limit`, by step number) delete good checkpoints while keeping
    the damaged newest, so the choice is left to the user, with the previous intact checkpoint named.
    """
    path = checkpoint / COMPLETE_MARKER
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(TrainerState)}
        if not isinstance(state, dict):
            problem = f"holds a JSON {type(state).__name__}, not an object"
        elif unknown := sorted(set(state) - known):
            problem = f"has fields transformers does not know ({', '.join(unknown[:3])})"
        else:
            return
    except FileNotFoundError:
        problem = "is missing"
    except UnicodeDecodeError:
        problem = "is not text"
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON ({exc.msg} at line {exc.lineno})"
    match = _CHECKPOINT.match(checkpoint.name)
    step = int(match.group(1)) if match else None
    older = [
        (int(m.group(1)), child)
        for child in (checkpoint.parent.iterdir() if checkpoint.parent.is_dir() else ())
        if (m := _CHECKPOINT.match(child.name)) and step is not None and int(m.group(1)) < step and is_complete(child)
    ]
    fix = (
        f"delete {checkpoint} to resume from {max(older)[1].name}, the previous complete checkpoint"
        if older
        else f"delete {checkpoint} to start over"
    )
    raise DamagedCheckpointError(
        f"cannot resume from {checkpoint}: {path.name} {problem}; {fix}, or set resume_from_checkpoint to "
        "another checkpoint directory"
    )


def check_finite(model: torch.nn.Module) -> None:
    # Only what trains can have turned non-finite; a frozen 4-bit base's packed bytes, read as the float dtype
    # they are stored in (QLoRA's quant_storage), are not numbers at all.
    bad = [name for name, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteModelError(
            f"the model has non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); not saving "
            "it. Resume from the last checkpoint with a lower learning_rate or max_grad_norm"
        )


class AtomicCheckpointMixin:
    """`_save_checkpoint` through a staging directory and a rename (mixed into BaseTrainer); a checkpoint to
    resume from is checked before transformers reads it.

    transformers chooses the checkpoint's parent directory with its `_get_output_dir` hook; during a save
    it returns the staging directory, at any other time (e.g. the rotation at train end) the output_dir.
    """

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            check_trainer_state(Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    _staging_root: Path | None = None  # set while transformers' _save_checkpoint runs

    def _get_output_dir(self, trial):
        # transformers' _save_checkpoint writes `checkpoint-N` into (and rotates) the directory this returns.
        # Overriding the hook, rather than swapping the method on the instance, keeps it visible and fenced
        # (hf_hooks.py; tests/train/test_hf_hooks.py checks that _save_checkpoint still asks it).
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial=trial)

    def _save_checkpoint(self, model, trial):
        check_finite(self.accelerator.unwrap_model(self.model))
        run_dir = Path(self._get_output_dir(trial=trial))
        staging_root = run_dir / STAGING_DIR
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = staging_root / name, run_dir / name
        if self.args.should_save and staged.exists():
            shutil.rmtree(staged)  # left by a run killed while saving
        self.accelerator.wait_for_everyone()

        # transformers writes (and rotates) inside staging_root, where this is the only checkpoint
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None

        self.accelerator.wait_for_everyone()  # every rank has written its RNG state into `staged`
        if self.args.should_save:
            _fsync_tree(staged)
            if final.exists():  # the same step saved again (e.g. a final save right after a periodic one)
                replaced = staging_root / f"{name}.replaced"
                shutil.rmtree(replaced, ignore_errors=True)
                os.replace(final, replaced)
                os.replace(staged, final)
                shutil.rmtree(replaced)
            else:
                os.replace(staged, final)
            _remove_if_empty(staging_root)  # a run leaves no empty .staging/ behind in output_dir
            _fsync_dir(run_dir)
            if self.state.best_model_checkpoint and str(staging_root) in self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(
                    str(staging_root), str(run_dir)
                )
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,  # by step number: a copied or touched directory keeps its place
            )
        self.accelerator.wait_for_everyone()


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:  # not empty (a partial save of another run is kept for inspection) or already gone
        pass


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
