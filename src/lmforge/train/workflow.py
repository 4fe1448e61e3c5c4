"""The parts every stage shares: pick the template, assemble the trainer, train, save.

A stage's `run_<stage>` reads as a list of these calls; this module holds no stage-specific logic: what
differs between stages (data kind, collator, plotted metrics, perplexity) is read from the run's `Stage` spec
(`lmforge.stages`).
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.config import RunConfig
from lmforge.data.pipeline import TokenizedData
from lmforge.errors import ConfigError
from lmforge.data.templates import resolve_template
from lmforge.logging import get_logger
from lmforge.run_info import write_run_info
from lmforge.stages import STAGES
from lmforge.train.callbacks import LogWriterCallback, LossPlotCallback, ThroughputCallback, use_console
from lmforge.train.callbacks.graceful_stop import GracefulStopCallback
from lmforge.train.checkpoint import check_finite, latest_complete_checkpoint
from lmforge.train.trainer import BaseTrainer

logger = get_logger(__name__)

@dataclass
class TrainResult:
    output_dir: str
    metrics: dict[str, float] = field(default_factory=dict)


def load_training_model(cfg: RunConfig):
    """The model of `cfg`, prepared for its stage: adapters applied, checkpointing as configured."""
    from lmforge.model.loader import load_model

    return load_model(
        cfg.model,
        cfg.adapter,
        is_trainable=cfg.training.do_train,
        gradient_checkpointing=cfg.training.gradient_checkpointing,
        checkpoint_every_n_layers=cfg.training.checkpoint_every_n_layers,
        selective_checkpointing=cfg.training.selective_checkpointing,
        pure_bf16=cfg.finetuning.pure_bf16,
    )


def load_conversation_data(cfg: RunConfig):
    """(tokenizer, template, tokenized train/eval data) of a stage that reads templated data (conversations,
    pairs, feedback), tokenized by the processor of its data kind."""
    from lmforge.data.pipeline import build_datasets
    from lmforge.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    template = resolve_template(cfg.data.template, tokenizer, cfg.data.enable_thinking)
    return tokenizer, template, build_datasets(cfg.data, cfg.finetuning.stage, tokenizer, template,
                                               seed=cfg.training.seed)


def build_collator(cfg: RunConfig, tokenizer):
    """The collator the stage's spec names (`Stage.collator`), padding with the tokenizer's pad id."""
    from lmforge.data.collators import COLLATORS

    return COLLATORS.get(STAGES.get(cfg.finetuning.stage).collator)(tokenizer.pad_token_id, cfg.data)


def resume_checkpoint(cfg: RunConfig) -> str | None:
    """The checkpoint to resume from (`resume_from_checkpoint: true` = the latest in output_dir)."""
    value = cfg.training.resume_from_checkpoint
    output_dir = Path(cfg.training.output_dir)
    last = latest_complete_checkpoint(output_dir)
    if value is None or str(value).lower() in ("false", "none", ""):
        if last and not cfg.training.overwrite_output_dir:
            raise ConfigError(
                f"output_dir {output_dir} already holds checkpoints ({last.name}); set "
                "'resume_from_checkpoint: true' to continue, or 'overwrite_output_dir: true' to start over"
            )
        return None
    if str(value).lower() == "true":
        if last is None:
            raise ConfigError(f"'resume_from_checkpoint: true' but output_dir {output_dir} has no checkpoint yet")
        return str(last)
    if not Path(str(value)).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {value} is not a checkpoint directory")
    return str(value)


def build_trainer(
    cfg: RunConfig, model, tokenizer, data: TokenizedData, collator, *, trainer_class=BaseTrainer, **trainer_kwargs,
) -> BaseTrainer:
    """The stage's trainer (`trainer_class`, given `trainer_kwargs`) with lmforge's callbacks.

    From the stage's spec: the metrics `plot_loss` draws besides the loss (`Stage.plotted`, e.g. dpo's
    rewards/accuracies), and whether exp(loss) is logged as perplexity (`Stage.token_loss`).
    """
    stage = STAGES.get(cfg.finetuning.stage)
    throughput = ThroughputCallback()
    callbacks = [throughput, LogWriterCallback(cfg.training.output_dir), GracefulStopCallback()]
    evaluators = None
    if cfg.evaluators.evaluators:  # eval_tasks: scored on the model being trained, logged as eval/<label>/<metric>
        from lmforge.train.callbacks.evaluators import EvaluatorCallback

        # apply_chat_template entries render prompts with the run's template, resolved as training resolves it
        chat = any(spec.apply_chat_template for spec in cfg.evaluators.evaluators)
        template = resolve_template(cfg.data.template, tokenizer, cfg.data.enable_thinking) if chat else None
        evaluators = EvaluatorCallback(cfg.evaluators.evaluators, tokenizer, template, cfg.data.default_system)
        callbacks.append(evaluators)
    if cfg.finetuning.plot_loss:
        plotted = (*stage.plotted, *(evaluators.plotted() if evaluators else ()))
        callbacks.append(LossPlotCallback(cfg.training.output_dir, metrics=plotted))
    if cfg.finetuning.ema_decay is not None:
        from lmforge.train.callbacks.ema import EmaCallback

        callbacks.append(EmaCallback(cfg.finetuning.ema_decay, resume_checkpoint(cfg)))
    if cfg.lora.pissa_convert and cfg.lora.pissa_init:
        from lmforge.train.callbacks.pissa import PissaConvertCallback

        callbacks.append(PissaConvertCallback(cfg.training.output_dir))
    trainer = trainer_class(
        model=model,
        args=cfg.training,
        data_collator=collator,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        callbacks=callbacks,
        batch_observers=[throughput.observe_batch],
        loss_chunk_size=cfg.loss.loss_chunk_size,
        loss_weighting=cfg.loss.loss_weighting,
        max_tokens_per_batch=cfg.data.max_tokens_per_batch,
        param_groups=loraplus_groups(cfg),
        optimizer_args=cfg.optimizers,  # use_galore / use_apollo / ...: train/optimizers
        **trainer_kwargs,
    )
    if evaluators is not None:
        evaluators.attach(trainer)
    use_console(trainer)  # aligned lines with units above a progress bar, not transformers' dicts
    trainer.reports_perplexity = stage.token_loss  # exp(loss) is a perplexity only for a token cross-entropy
    return trainer


def loraplus_groups(cfg: RunConfig):
    """LoRA+'s param-group builder for the trainer (`BaseTrainer.param_groups`), or None without loraplus_lr_ratio."""
    lora, training = cfg.lora, cfg.training
    if lora.loraplus_lr_ratio is None or cfg.finetuning.finetuning_type != "lora":
        return None
    from lmforge.train.loraplus import loraplus_param_groups

    def build(model, decay_names):
        return loraplus_param_groups(model, training.learning_rate, lora.loraplus_lr_ratio,
                                     lora.loraplus_lr_embedding, training.weight_decay, decay_names)

    return build


def train_and_save(trainer: BaseTrainer, cfg: RunConfig, tokenizer, template_name: str | None) -> TrainResult:
    metrics: dict[str, float] = {}
    if cfg.training.do_train:
        resume = resume_checkpoint(cfg)
        # The objects that exist now (modules of torch/transformers, the model, the dataset) outlive training:
        # frozen, Python's full collections stop re-scanning them every few steps (0.3 s each on a small CPU
        # run). Unfrozen afterwards, so a process that trains twice (tests, notebooks) can still free them.
        gc.freeze()
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        finally:
            gc.unfreeze()
        metrics.update(result.metrics)
        check_finite(trainer.model)
        trainer.save_model()
        trainer.save_state()
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(cfg.training.output_dir)
            save_run_info(cfg, template_name)
    if cfg.training.do_eval and trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    if metrics:
        trainer.log_metrics("all", metrics)
        trainer.save_metrics("all", metrics)
    return TrainResult(cfg.training.output_dir, metrics)


def save_run_info(cfg: RunConfig, template_name: str | None) -> None:
    write_run_info(cfg.training.output_dir, {
        "stage": cfg.finetuning.stage,
        "template": template_name,
        # beside the template: chat, api, predict and eval render prompts with the thinking setting trained with
        "enable_thinking": cfg.data.enable_thinking,
        "base_model": cfg.model.model_name_or_path,
        "finetuning_type": cfg.finetuning.finetuning_type,
        "cutoff_len": cfg.data.cutoff_len,
        "default_system": cfg.data.default_system,
        "seed": cfg.training.seed,  # the val_size split is drawn with it: `lmforge check` redraws the same held-out set
        "data": {k: v for k, v in asdict(cfg.data).items() if v is not None},
        # the method's keys as one flat mapping, as the single finetuning group held them before the split
        "finetuning": {**asdict(cfg.finetuning), **asdict(cfg.lora), **asdict(cfg.freeze), **asdict(cfg.preference),
                       **asdict(cfg.loss)},
    })
