"""Group relative policy optimisation from verifiable rewards: GRPO, Dr. GRPO, DAPO and GSPO (TRL's loss types).

    lmforge train examples/grpo_lora.yaml

Each optimizer step: the prompts of all its micro-batches (and processes) are sampled `num_generations` times each
(`rollout.sample_completions` through the batching engine, seeded by the step), the completions are
scored by the reward functions (and the reward model), rewards become group-relative advantages, and each
micro-batch's clipped policy loss (`grpo_loss.policy_loss`) is back-propagated. Rollouts happen in
`_get_num_items_in_batch`, the one hook transformers calls with every micro-batch of the step before the first
forward: it is also where DAPO's normaliser, the completion tokens of the whole step, is known.

`num_iterations` > 1 (mu): the step's prompts come again for mu steps (`GroupRepeatSampler`) and their rollouts are
reused, with the log-probs of the policy that sampled them kept as the ratio's denominator. The reference
(`beta` > 0) is the policy with its adapter switched off under LoRA, else a frozen copy (or `ref_model`).

Logged per step (TRL's names): reward, reward_std, rewards/<function>/mean and /std, advantages/abs_mean,
frac_reward_zero_std, kl, clip_ratio/low_mean and /high_mean, entropy, completions/mean_length, /max_length and
/clipped_ratio, time/rollout_s, time/train_s, rollout_tokens_per_s.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmforge.config import RunConfig
from lmforge.config.rl_args import GRPO_SAMPLING
from lmforge.data.samplers import GroupRepeatSampler
from lmforge.train.preference import PreferenceMixin, load_reference
from lmforge.train.rl.completion_log import CompletionLog
from lmforge.train.rl.grpo_loss import ADVANTAGE_EPS, group_advantages, policy_loss, zero_variance_groups
from lmforge.train.rl.logprobs import completion_log_probs
from lmforge.train.rl.rewards import load_reward_funcs, score_completions
from lmforge.train.rl.rollout import Rollout, adapter_merged, row_seeds, sample_completions
from lmforge.train.trainer import BaseTrainer
from lmforge.train.workflow import TrainResult, build_collator, build_trainer, load_conversation_data, train_and_save


class GRPOTrainer(PreferenceMixin, BaseTrainer):
    def __init__(self, *args, rl=None, sampling=None, repetition_penalty: float = 1.0, reward_funcs=(),
                 reward_model=None, stop_ids=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.rl = rl
        self.sampling = sampling
        self.repetition_penalty = repetition_penalty
        self.reward_funcs = list(reward_funcs)
        self.reward_model = reward_model
        self.stop_ids = list(stop_ids)
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the step itself (DAPO normalises over the step)
        self._rollouts: list[dict] = []  # the current step's, reused for num_iterations steps
        self._train_seconds = 0.0
        self.completion_log = CompletionLog(Path(self.args.output_dir)) if rl.log_completions else None

    # -- data ------------------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):
        args = self.args
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        return GroupRepeatSampler(len(dataset), generations=self.rl.num_generations,
                                  prompts_per_step=per_step // self.rl.num_generations,
                                  iterations=self.rl.num_iterations, seed=args.data_seed or args.seed)

    # -- rollouts --------------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples, device):
        """Rollouts of every micro-batch of this step (or the ones kept from the step that sampled them); returns
        the step's completion tokens on all processes, DAPO's normaliser."""
        step = self.state.global_step
        if step % self.rl.num_iterations == 0 or len(self._rollouts) != len(batch_samples):
            started = time.perf_counter()
            rollouts = [self._sample(batch, step, k) for k, batch in enumerate(batch_samples)]
            self._score(rollouts)
            self._rollouts = rollouts
            self.metrics.add("train", "time/rollout_s", torch.tensor([time.perf_counter() - started]))
        for batch, rollout in zip(batch_samples, self._rollouts):
            if batch["prompt"] != rollout["prompts"]:
                raise RuntimeError("grpo: a reused rollout does not belong to this step's prompts "
                                   "(sampler out of step)")
            batch["rollout"] = rollout
            # the training forward runs over prompt + completion: that is what the throughput meters should count
            batch["input_ids"], batch["attention_mask"] = rollout["sample"].sequences, rollout["sample"].attention_mask
        tokens = sum(r["sample"].completion_mask.sum() for r in self._rollouts).to(device)
        if self.accelerator.num_processes > 1:
            tokens = self.accelerator.gather(tokens.reshape(1)).sum()
        return tokens

    def _sample(self, batch: dict, step: int, micro_batch: int) -> dict:
        model = self.accelerator.unwrap_model(self.model)
        device = self.args.device
        # accelerate deals a step's micro-batches to the processes in turn: the global row of its first completion
        rows = batch["input_ids"].shape[0]
        first_row = (micro_batch * self.accelerator.num_processes + self.accelerator.process_index) * rows
        seeds = row_seeds(self.args.seed, step, first_row, rows).to(device)
        started = time.perf_counter()
        with self.accelerator.autocast(), adapter_merged(model):
            sample = sample_completions(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                max_new_tokens=self.rl.max_completion_length, sampling=self.sampling, stop_ids=self.stop_ids,
                pad_id=self.processing_class.pad_token_id, seeds=seeds, repetition_penalty=self.repetition_penalty,
            )
        seconds = time.perf_counter() - started
        tokens_per_s = float(sample.lengths.sum()) / max(seconds, 1e-9)
        split = "train" if self.model.training else "eval"
        self.metrics.add(split, "rollout_tokens_per_s", torch.tensor([tokens_per_s]))
        texts = self.processing_class.batch_decode(sample.completion_ids, skip_special_tokens=True)  # pad after stops
        return {"sample": sample, "prompts": list(batch["prompt"]), "answers": list(batch["answer"]),
                "completions": texts}

    def _score(self, rollouts: list[dict]) -> None:
        """Rewards, advantages, and the log-probs the loss compares with (old policy, reference), per micro-batch."""
        rl = self.rl
        names = [name for name, _ in self.reward_funcs] + (["reward_model"] if self.reward_model else [])
        for r in rollouts:
            r["rewards"], r["per_func"] = self._rewards(r)
        all_rewards = torch.cat([r["rewards"] for r in rollouts])
        batch_std = None
        if rl.scale_rewards == "batch":  # the std of the whole step, every process (TRL's batch scaling)
            gathered = self._gather_cpu(all_rewards)
            batch_std = gathered.std()
        for r in rollouts:
            sample = r["sample"]
            advantages = group_advantages(r["rewards"], rl.num_generations,
                                          "none" if batch_std is not None else rl.scale_rewards)
            if batch_std is not None:
                advantages = advantages / (batch_std + ADVANTAGE_EPS)
            r["advantages"] = advantages.to(self.args.device)
            r["lengths"] = sample.lengths.float()  # as sampled, before truncated completions lose their mask
            if rl.mask_truncated_completions:
                sample.completion_mask = sample.completion_mask * (~sample.truncated).long().unsqueeze(-1)
            r["old_logps"] = self._frozen_log_probs(sample, reference=False) if rl.num_iterations > 1 else None
            r["ref_logps"] = self._frozen_log_probs(sample, reference=True) if rl.beta else None
            self._log_rollout(r, names)
        longest = self._gather_cpu(torch.stack([r["lengths"].max() for r in rollouts])).max()
        self.metrics.add("train", "completions/max_length", longest.reshape(1))  # the step's longest completion
        log_step = self.state.global_step % max(1, int(self.args.logging_steps)) == 0
        if self.completion_log is not None and self.is_world_process_zero() and log_step:
            self.completion_log.write(self.state.global_step, rollouts)

    def _rewards(self, r: dict) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """(weighted total per completion, {function name: its values}): the reward functions, then the reward model."""
        weights = self.rl.reward_weights
        totals, per_func = score_completions(self.reward_funcs, r["prompts"], r["completions"],
                                             {"answer": r["answers"]},
                                             weights=weights[:len(self.reward_funcs)] if weights else None)
        rewards = torch.tensor(totals, dtype=torch.float32)
        if self.reward_model is not None:
            scores = self.reward_model(r["sample"]).cpu()
            rewards = rewards + (weights[-1] if weights else 1.0) * scores
            per_func["reward_model"] = scores.tolist()
        return rewards, per_func

    def _gather_cpu(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.gather(values.to(self.args.device)).cpu()

    @torch.no_grad()
    def _frozen_log_probs(self, sample: Rollout, reference: bool) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.model)
        with self.accelerator.autocast():
            if not reference:
                return self._log_probs(model, sample)[0]
            with self.as_reference(model) as scorer:
                return self._log_probs(scorer, sample)[0]

    def _log_probs(self, model, sample: Rollout, with_entropy: bool = False):
        return completion_log_probs(model, sample, temperature=self.sampling["temperature"],
                                    chunk_size=self.loss_chunk_size, chunked=self._uses_chunked_loss(model),
                                    with_entropy=with_entropy)

    def _log_rollout(self, r: dict, names: list[str]) -> None:
        """Per-completion and per-group values, so that the logged means are those of the whole step at any number
        of processes and micro-batches."""
        add, groups = self.metrics.add, self.rl.num_generations
        add("train", "reward", r["rewards"])
        # TRL's reward_std: the std within each prompt's group, averaged over the groups
        add("train", "reward_std", r["rewards"].view(-1, groups).std(dim=1))
        for name in names:
            values = torch.tensor(r["per_func"][name])
            add("train", f"rewards/{name}/mean", values)
            add("train", f"rewards/{name}/std", values.view(-1, groups).std(dim=1))
        add("train", "advantages/abs_mean", r["advantages"].abs())
        add("train", "frac_reward_zero_std", zero_variance_groups(r["rewards"], groups))
        add("train", "completions/mean_length", r["lengths"])
        add("train", "completions/clipped_ratio", r["sample"].truncated.float())

    # -- loss ------------------------------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        started = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.device.type == "cuda":
            torch.cuda.synchronize()
        self._train_seconds += time.perf_counter() - started
        if inputs is not None and len(self._rollouts) and inputs.get("rollout") is self._rollouts[-1]:
            self.metrics.add("train", "time/train_s", torch.tensor([self._train_seconds]))
            self._train_seconds = 0.0
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rollout = inputs.get("rollout")
        if rollout is None:  # evaluation: sample the batch's prompts now
            rollout = self._eval_rollout(inputs)
        rl, sample = self.rl, rollout["sample"]
        with self.accelerator.autocast():
            logps, entropy = self._log_probs(model, sample, with_entropy=True)
        mask = sample.completion_mask
        dapo_tokens = None
        if rl.loss_type == "dapo" and num_items_in_batch is not None:
            # TRL: the step's completion tokens over all processes, per process (DDP averages the processes' grads)
            dapo_tokens = float(num_items_in_batch) / self.accelerator.num_processes
        out = policy_loss(logps, rollout["old_logps"], rollout["advantages"], mask, loss_type=rl.loss_type,
                          epsilon=rl.epsilon, epsilon_high=rl.epsilon_high, beta=rl.beta,
                          ref_logps=rollout["ref_logps"], importance_sampling_level=rl.importance_sampling_level,
                          max_completion_length=rl.max_completion_length, num_items_in_batch=dapo_tokens)
        loss = out.loss
        if dapo_tokens is None and model.training:  # a per-micro-batch mean: the step's is their average
            loss = loss / self.current_gradient_accumulation_steps
        split, tokens = self.split_name(model), float(mask.sum())
        for name, value in out.metrics.items():  # token means: weighted by the micro-batch's tokens
            self.metrics.add_mean(split, name, value, tokens)
        self.metrics.add(split, "entropy", entropy[mask.bool()])
        return (loss, {"loss": loss}) if return_outputs else loss

    @torch.no_grad()
    def _eval_rollout(self, inputs: dict) -> dict:
        g = self.rl.num_generations
        batch = {"input_ids": inputs["input_ids"].repeat_interleave(g, 0),
                 "attention_mask": inputs["attention_mask"].repeat_interleave(g, 0),
                 "prompt": [p for p in inputs["prompt"] for _ in range(g)],
                 "answer": [a for a in inputs["answer"] for _ in range(g)]}
        r = self._sample(batch, self.state.global_step, 0)
        rewards, _ = self._rewards(r)
        self.metrics.add("eval", "reward", rewards)
        r.update(advantages=group_advantages(rewards, g, self.rl.scale_rewards).to(self.args.device),
                 old_logps=None, ref_logps=self._frozen_log_probs(r["sample"], True) if self.rl.beta else None)
        return r


def run_grpo(cfg: RunConfig) -> TrainResult:
    from lmforge.train.workflow import load_training_model

    tokenizer, template, data = load_conversation_data(cfg)
    model = load_training_model(cfg)
    rl = cfg.rl
    base_dir = Path(cfg.source).parent if cfg.source else Path.cwd()
    reward_funcs = load_reward_funcs(rl.reward_funcs or [], base_dir)
    reward_model = None
    if rl.reward_model:
        from lmforge.train.rl.reward_model import RewardModelScorer

        reward_model = RewardModelScorer.load(rl.reward_model, cfg.model, len(tokenizer))
    reference = load_reference(cfg, model) if rl.beta else None
    trainer = build_trainer(
        cfg, model, tokenizer, data, build_collator(cfg, tokenizer), trainer_class=GRPOTrainer,
        preference=cfg.preference, reference=reference, rl=rl, sampling=cfg.generation.sampling(GRPO_SAMPLING),
        repetition_penalty=cfg.generation.repetition_penalty, reward_funcs=reward_funcs, reward_model=reward_model,
        stop_ids=template.stop_token_ids(tokenizer),
    )
    return train_and_save(trainer, cfg, tokenizer, template.name)
