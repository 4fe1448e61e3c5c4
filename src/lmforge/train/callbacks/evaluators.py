"""Evaluators during training, OLMo style: `eval_tasks` scored on the model being trained.

    evaluators = EvaluatorCallback(cfg.evaluators.evaluators, tokenizer, template)   # task files resolved here
    trainer = BaseTrainer(..., callbacks=[evaluators, ...])
    evaluators.attach(trainer)                                            # metrics go out through trainer.log

Each evaluator's tasks are scored every `eval_interval` steps of its own (OLMo's per-evaluator interval), else
at every `eval_steps` step (with `eval_strategy: steps`) or every epoch's end (with `eval_strategy: epoch`); at the
last step; and before the first step with `eval_on_start: true`. They are scored
with `lmforge eval`'s code (`eval.runner.score_task` over `eval.scoring.Scorer`), so the figures equal what
`lmforge eval` gives on the saved model with the same task, limit and shots. The model is put in eval mode under
no_grad and back in train mode after. Metrics are logged through `Trainer.log` as `eval/<label>/<metric>` (a
filtered metric as `eval/<label>/<metric>/<filter>`; a group's tasks as `eval/<label>/<task>/<metric>` beside the
group's own figures), so trainer_log.jsonl, the console and every report_to backend receive them.

The time spent evaluating is not charged to training throughput (ThroughputCallback restarts its clock on a
log without `loss`). Under DDP each rank scores every world_size-th request and the results are gathered in
request order (`ShardedScorer`), so the figures are a single process's; under FSDP or DeepSpeed, whose sharded
weights need every rank in every forward, each rank scores every request instead. Only the main process writes
the log. A type lm evaluator (held-out text: loss, perplexity, bits per byte, eval.lm_sets) is not sharded.
Prompts are the task's plain text, or, for an entry with `apply_chat_template: true`, chat turns rendered with
the training run's chat template (`template`, resolved as training resolved it), as `lmforge eval
apply_chat_template=true` renders them from the saved run's lmforge_run.json.
"""

from __future__ import annotations

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.config.eval_args import EvalArguments, fixed_batch_size
from lmforge.config.evaluator_args import EvaluatorSpec
from lmforge.logging import get_logger

logger = get_logger(__name__)


def metric_keys(label: str, task: str | None, results: dict) -> dict[str, float]:
    """lm-eval's "acc,none" result keys -> {"eval/<label>[/<task>]/acc": value}; stderrs and counts left out."""
    prefix = f"eval/{label}/" + (f"{task}/" if task else "")
    out = {}
    for key, value in results.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric, _, filter_name = key.partition(",")
        out[prefix + metric + ("" if filter_name == "none" else f"/{filter_name}")] = float(value)
    return out


LM_METRICS = ("loss", "perplexity", "bits_per_byte")
"""What a type lm evaluator logs (eval.lm_sets.score_lm_stream)."""


class ShardedScorer:
    """A Scorer whose request lists are split over the ranks (rank r scores requests r, r + world, ...) and
    gathered back in order: every rank returns the whole list, as one process would."""

    def __init__(self, scorer, rank: int, world: int):
        self.scorer, self.rank, self.world = scorer, rank, world

    def _shard(self, method, requests, *args, **kwargs) -> list:
        import torch.distributed as dist

        requests = list(requests)
        mine = method(requests[self.rank::self.world], *args, **kwargs)
        parts: list = [None] * self.world
        dist.all_gather_object(parts, mine)
        out: list = [None] * len(requests)
        for rank, part in enumerate(parts):
            out[rank::self.world] = part
        return out

    def loglikelihood(self, pairs, desc: str = "loglikelihood", items: int | None = None):
        share = None if items is None else -(-items // self.world)  # a rank's share of the items, for its bar
        return self._shard(self.scorer.loglikelihood, pairs, desc=desc, items=share)

    def loglikelihood_rolling(self, texts, desc: str = "perplexity"):
        return self._shard(self.scorer.loglikelihood_rolling, texts, desc=desc)

    def generate_until(self, contexts, until, max_gen_toks: int = 256, desc: str = "generate"):
        return self._shard(self.scorer.generate_until, contexts, until, max_gen_toks, desc=desc)


def shard_world(trainer) -> tuple[int, int] | None:
    """(rank, world size) when requests can be split over the ranks: DDP (replicated weights); None for one
    process, FSDP or DeepSpeed (a forward there needs every rank)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        return None
    return dist.get_rank(), dist.get_world_size()


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class EvaluatorCallback(TrainerCallback):
    def __init__(self, evaluators: tuple[EvaluatorSpec, ...], tokenizer, template=None,
                 default_system: str | None = None):
        """`template`: the run's chat template object (data.templates), needed by entries with apply_chat_template;
        `default_system`: the run's system prompt, given to their prompts as training gave it to samples."""
        from lmforge.eval.lm_sets import PREFIX, check_lm_source, lm_stream
        from lmforge.eval.runner import task_items
        from lmforge.eval.tasks.chat_context import PromptRenderer
        from lmforge.eval.tasks.registry import resolve_selection

        self.tokenizer = tokenizer
        self.renderers = {}
        for spec in evaluators:
            if spec.type != "downstream" or not (spec.apply_chat_template or spec.system_instruction is not None):
                continue
            if spec.apply_chat_template and template is None:
                raise ValueError(f"evaluator {spec.label!r}: apply_chat_template needs the run's template")
            self.renderers[spec.label] = PromptRenderer(template if spec.apply_chat_template else None, tokenizer,
                                                        fewshot_as_multiturn=spec.multiturn,
                                                        system_instruction=spec.system_instruction,
                                                        default_system=default_system if spec.apply_chat_template else None)
        # resolved now, so a missing task file fails before training, not at the first evaluation; an lm set's
        # text is tokenized once, here
        self.selections = [(spec, resolve_selection(spec.task, spec.include_path)) for spec in evaluators
                           if spec.type == "downstream"]
        # every task's documents read and prompts written once, now: a bad record stops the run before training
        self.items = {(spec.label, task.task): task_items(task, self._eval_args(spec), self.renderers.get(spec.label))
                      for spec, selection in self.selections for task in selection.specs}
        self.lm_sets = []
        for spec in evaluators:
            if spec.type == "lm":
                name = spec.dataset if spec.dataset.startswith(PREFIX) else PREFIX + spec.dataset
                check_lm_source(name)
                self.lm_sets.append((spec, lm_stream(name, tokenizer)))
        self.trainer = None
        self.scored_at: dict[str, int] = {}  # label -> the last step it was scored at
        self.scorers: dict[str, object] = {}  # label -> its Scorer (a batch size found by auto is kept)
        self.announced = False

    def plotted(self) -> list[str]:
        """The logged keys `plot_loss` draws, one panel each: the metrics of single-task evaluators."""
        return [f"eval/{spec.label}/{metric}" for spec, selection in self.selections
                if len(selection.specs) == 1 and not selection.groups for metric in selection.specs[0].metrics] + [
                f"eval/{spec.label}/{metric}" for spec, _ in self.lm_sets for metric in LM_METRICS]

    def attach(self, trainer) -> None:
        """The trainer whose `log` carries the metrics (callbacks are not handed the trainer itself)."""
        self.trainer = trainer

    @staticmethod
    def _eval_args(spec: EvaluatorSpec) -> EvalArguments:
        return EvalArguments(num_fewshot=spec.num_fewshot, limit=spec.limit)

    def labels(self) -> list[str]:
        return [spec.label for spec, _ in self.selections] + [spec.label for spec, _ in self.lm_sets]

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None,
                       **kwargs):
        if args.eval_on_start:  # the starting point of every curve: the model before its first step
            self._evaluate_due(state, model, self.labels())

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        every = state.eval_steps or args.eval_steps  # the trainer resolves a fractional eval_steps into state
        last = control.should_training_stop or state.global_step >= state.max_steps
        due = []
        for spec in [spec for spec, _ in self.selections] + [spec for spec, _ in self.lm_sets]:
            interval = spec.eval_interval or (int(every) if strategy == "steps" and every else None)
            if last or (interval and state.global_step % interval == 0):
                due.append(spec.label)
        self._evaluate_due(state, model, due)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "epoch":
            self._evaluate_due(state, model, [label for label in self.labels() if not self._interval_of(label)])

    def _interval_of(self, label: str) -> int | None:
        return next(spec.eval_interval for spec, _ in self.selections + self.lm_sets if spec.label == label)

    def _evaluate_due(self, state: TrainerState, model, labels: list[str]) -> None:
        """Score and log the labelled evaluators, each at most once per step (the last step may also be an
        interval or epoch step)."""
        labels = [label for label in labels if self.scored_at.get(label) != state.global_step]
        if labels:
            for label in labels:
                self.scored_at[label] = state.global_step
            self.trainer.log(self.evaluate(model, labels))

    def evaluate(self, model, labels: list[str] | None = None) -> dict[str, float]:
        """The metrics of the evaluators named in `labels` (None: all) on `model`: a plain or PEFT model,
        unwrapped from DDP, or the language model under rm's value head (scored as a language model)."""
        import torch

        from lmforge.eval.lm_sets import score_lm_stream
        from lmforge.eval.runner import score_task
        from lmforge.eval.scoring import Scorer, max_length_of
        from lmforge.eval.tasks.groups import aggregate_group

        model = getattr(model, "module", model)
        model = getattr(model, "pretrained_model", model)  # ValueHeadModel (rm): its backbone keeps the LM head
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        try:
            with torch.no_grad():
                for spec, selection in self.selections:
                    if labels is not None and spec.label not in labels:
                        continue
                    scorer = self.scorers.get(spec.label)
                    if scorer is None or scorer.model is not model:
                        scorer = self.scorers[spec.label] = Scorer(model, self.tokenizer, batch_size=spec.batch_size,
                                                                   progress=False)
                    sharding = shard_world(self.trainer)
                    if sharding:
                        scorer = ShardedScorer(scorer, *sharding)
                    if not self.announced:
                        self.announced = True
                        logger.info("evaluators: %s", f"requests split over {sharding[1]} ranks" if sharding
                                    else "every rank scores every request" if _world() > 1 else "one process")
                    results = {task.task: score_task(task, scorer, self._eval_args(spec),
                                                     items=self.items[(spec.label, task.task)])[0]
                               for task in selection.specs}
                    if len(selection.specs) == 1 and not selection.groups:
                        metrics.update(metric_keys(spec.label, None, next(iter(results.values()))))
                        continue
                    for task, values in results.items():
                        metrics.update(metric_keys(spec.label, task, values))
                    for group, leaves in selection.groups:
                        name = None if len(selection.groups) == 1 else group.group
                        metrics.update(metric_keys(spec.label, name, aggregate_group(group, leaves, results)))
                for spec, stream in self.lm_sets:  # not sharded: every rank scores the whole stream
                    if labels is not None and spec.label not in labels:
                        continue
                    results = score_lm_stream(stream, model, self.tokenizer,
                                              batch_size=fixed_batch_size(spec.batch_size),
                                              seq_len=spec.seq_len or max_length_of(model, self.tokenizer))
                    metrics.update(metric_keys(spec.label, None, results))
        finally:
            model.train(was_training)
        return metrics
