"""Proximal policy optimisation against a reward model, as LLaMA-Factory 0.9 runs it (TRL 0.9's PPOTrainer).

    lmforge train examples/ppo_lora.yaml      # stage: ppo, reward_model: saves/rm (a stage rm output_dir)

A rollout batch is ppo_buffer_size x per_device_train_batch_size x gradient_accumulation_steps x processes prompts,
one completion each (`generation.max_new_tokens`, LLaMA-Factory's sampling 0.95 / 0.7 / 50). It is scored once: the
reward model's score of prompt + completion, the policy's log-probs and values, the reference's log-probs. Per-token
rewards are -kl_coef x (logp - ref_logp) plus the score at the last token; GAE (gamma 1, lam 0.95) gives advantages
(whitened over the batch) and returns. Then ppo_epochs passes over the batch, each in its own shuffled order, in
mini-batches of per_device_train_batch_size: clipped policy loss + 0.1 x clipped value loss (`ppo_math`). After
each rollout batch the adaptive KL controller (init 0.2, target ppo_target, horizon 10000) moves kl_coef.

How PPO's inner epochs fit transformers' Trainer loop (the design choice): one Trainer optimizer step is one PPO
"backward batch" (gradient_accumulation_steps mini-batches, exactly TRL's optimizer step), so a rollout batch spans
ppo_epochs x ppo_buffer_size optimizer steps. `PPORolloutSampler` yields each rollout batch's prompts ppo_epochs
times, each pass in a seeded order; the trainer, at the first step of a rollout batch (in `_get_num_items_in_batch`,
the hook that sees the step's micro-batches before any forward), asks the sampler for the same plan, samples and
scores the whole batch, and then hands each micro-batch its rows (checked against the prompts the dataloader
delivered). Everything is a function of (seed, epoch, step), so the data order is deterministic. Under DDP every
process samples and scores the whole (global) rollout batch, identically by construction (each completion's seed is
its row), so the KL controller, score normalisation and whitening see the same numbers everywhere, then trains on the
mini-batches accelerate deals it: the losses of one process with gradient accumulation, at the price of sampling the
batch once per process. max_steps and
num_train_epochs count optimizer steps as for any stage (TRL's ppo counted rollout batches instead).

Log-probs are scored at temperature 1 (TRL 0.9 does not rescale the logits). The value head (`ValueHead`, on the
final hidden states, read in the same forward as the log-probs) is trained with the policy; under LoRA the backbone
is the LoRA model and the head fully trainable. The reference is the policy with its adapter off under LoRA, else a
frozen copy. Saved: the policy as usual (adapter or full model, for chat / export) plus value_head.safetensors and
ppo_state.json (the KL coefficient and running score moments); checkpoints hold all three and resuming loads them
back. Checkpoints fall on rollout-batch boundaries (save_steps a multiple of ppo_epochs x ppo_buffer_size), so a
resumed run samples the next batch exactly as the uninterrupted one did.

Logged per step: reward (mean raw score), kl (mean per-sequence KL to the reference), kl_coef, policy_loss,
value_loss, clipfrac, value_clipfrac, approxkl, completions/mean_length, time/rollout_s.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.config import RunConfig
from lmforge.data.samplers import PPORolloutSampler
from lmforge.errors import ConfigError
from lmforge.model.value_head import ValueHeadModel
from lmforge.train.preference import PreferenceMixin, load_reference
from lmforge.train.rl.logprobs import completion_log_probs, log_probs_from_hidden, scoring_inputs
from lmforge.train.rl.ppo_math import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    masked_whiten,
    per_token_rewards,
    ppo_losses,
)
from lmforge.train.rl.rollout import Rollout, adapter_merged, row_seeds, sample_completions
from lmforge.train.stages.rm import ValueHeadCheckpoints
from lmforge.train.trainer import BaseTrainer
from lmforge.train.workflow import TrainResult, build_collator, build_trainer, load_conversation_data, train_and_save

# TRL 0.9 PPOConfig defaults that LLaMA-Factory leaves as they are
GAMMA, LAM, CLIPRANGE, CLIPRANGE_VALUE, VF_COEF = 1.0, 0.95, 0.2, 0.2, 0.1
INIT_KL_COEF, KL_HORIZON, RATIO_THRESHOLD = 0.2, 10000, 10.0
PPO_STATE_FILE = "ppo_state.json"


class PPOTrainer(ValueHeadCheckpoints, PreferenceMixin, BaseTrainer):
    def __init__(self, *args, rl=None, sampling=None, repetition_penalty: float = 1.0, max_new_tokens: int = 64,
                 reward_model=None, stop_ids=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.rl, self.sampling, self.repetition_penalty = rl, sampling, repetition_penalty
        self.max_new_tokens, self.reward_model, self.stop_ids = max_new_tokens, reward_model, list(stop_ids)
        self.kl_control = AdaptiveKLController(INIT_KL_COEF, rl.ppo_target, KL_HORIZON)
        self.score_moments = RunningMoments()
        self._batch: dict | None = None  # the current rollout batch, reused for ppo_epochs x ppo_buffer_size steps
        self._batch_key: tuple[int, int] | None = None
        self._sampler: PPORolloutSampler | None = None

    # -- data ------------------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):
        args, rl = self.args, self.rl
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        per_rollout = (rl.ppo_buffer_size * args.per_device_train_batch_size * args.gradient_accumulation_steps
                       * args.world_size)
        self._sampler = PPORolloutSampler(len(dataset), prompts_per_rollout=per_rollout, ppo_epochs=rl.ppo_epochs,
                                          seed=args.data_seed or args.seed)
        return self._sampler

    def _get_num_items_in_batch(self, batch_samples, device):
        """Samples and scores the rollout batch at its first step; gives each micro-batch its rows of it."""
        rl, step = self.rl, self.state.global_step
        steps_per_batch = rl.ppo_epochs * rl.ppo_buffer_size
        epoch, index = divmod(step // steps_per_batch, self._sampler.rollouts)
        prompts, passes = self._sampler.plan(epoch, index)
        if self._batch_key != (epoch, index):
            started = time.perf_counter()
            self._batch = self._collect(prompts, step)
            self._batch_key = (epoch, index)
            self.metrics.add("train", "time/rollout_s", torch.tensor([time.perf_counter() - started]))
        ppo_epoch, backward_batch = divmod(step % steps_per_batch, rl.ppo_buffer_size)
        order, row_of = passes[ppo_epoch], {prompt: row for row, prompt in enumerate(prompts)}
        size, processes = self.args.per_device_train_batch_size, self.accelerator.num_processes
        for m, batch in enumerate(batch_samples):
            # accelerate deals the pass's mini-batches to the processes in turn
            start = ((backward_batch * len(batch_samples) + m) * processes + self.accelerator.process_index) * size
            rows = [row_of[i] for i in order[start:start + size]]
            if list(batch["prompt"]) != [self._batch["prompts"][r] for r in rows]:
                raise RuntimeError("ppo: a micro-batch does not match its rollout rows (sampler out of step)")
            sample = _rows(self._batch["sample"], rows)
            batch["ppo_rows"] = rows
            # the training forward runs over prompt + completion: that is what the throughput meters should count
            batch["input_ids"], batch["attention_mask"] = sample.sequences, sample.attention_mask
        return None  # each mini-batch loss is a token mean; transformers divides by the accumulation steps

    # -- rollouts --------------------------------------------------------------------------------------

    @torch.no_grad()
    def _collect(self, prompt_indices: list[int], step: int) -> dict:
        """The whole rollout batch: completions, scores, old log-probs and values, advantages and returns."""
        features = [self.train_dataset[i] for i in prompt_indices]
        prompts = self.data_collator(features)  # one left padding for the batch, so its rows can be sliced later
        size = self.args.per_device_train_batch_size
        chunks = [self._sample(prompts, list(range(s, min(s + size, len(features)))), step)
                  for s in range(0, len(features), size)]
        sample = _concat(chunks, self.processing_class.pad_token_id)
        parts = [self._score(_rows(sample, list(range(s, min(s + size, len(features))))))
                 for s in range(0, len(features), size)]
        scores, logps, values, ref_logps = (torch.cat([p[i] for p in parts]) for i in range(4))
        raw_scores = scores.clone()
        if self.rl.ppo_score_norm:  # TRL use_score_scaling + use_score_norm, as LLaMA-Factory sets them
            self.score_moments.update(scores)
            scores = self.score_moments.normalise(scores)
        mask = sample.completion_mask.to(logps.dtype)
        kl_coef = self.kl_control.value
        rewards, kl = per_token_rewards(scores.to(logps.device), logps, ref_logps, mask, kl_coef)
        if self.rl.ppo_whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, GAMMA, LAM)
        advantages = masked_whiten(advantages, mask)
        sequence_kl = kl.sum(-1)
        self.kl_control.update(float(sequence_kl.mean()), len(features))  # after the batch's rewards, as TRL
        add = self.metrics.add
        add("train", "reward", raw_scores)
        add("train", "kl", sequence_kl)
        add("train", "kl_coef", torch.tensor([kl_coef]))
        add("train", "completions/mean_length", sample.lengths.float())
        return {"prompts": list(prompts["prompt"]), "sample": sample, "logps": logps, "values": values,
                "advantages": advantages, "returns": returns}

    def _sample(self, prompts: dict, rows: list[int], step: int) -> Rollout:
        policy = self._policy()
        device = self.args.device
        with self.accelerator.autocast(), adapter_merged(policy):
            return sample_completions(
                policy, prompts["input_ids"][rows].to(device), prompts["attention_mask"][rows].to(device),
                max_new_tokens=self.max_new_tokens, sampling=self.sampling, stop_ids=self.stop_ids,
                pad_id=self.processing_class.pad_token_id, repetition_penalty=self.repetition_penalty,
                seeds=row_seeds(self.args.seed, step, rows[0] if rows else 0, len(rows)).to(device),
            )

    def _score(self, sample: Rollout):
        """(scores [N], log-probs [N, C], values [N, C], reference log-probs [N, C]) of one mini-batch of rows."""
        scores = self.reward_model(sample).to(self.args.device)
        with self.accelerator.autocast():
            logps, values = self._policy_outputs(self.accelerator.unwrap_model(self.model), sample)
            with self.as_reference(self._policy()) as reference:
                ref_logps = self._log_probs(reference, sample)
        return scores, logps, values, ref_logps

    def _policy(self):
        return self.accelerator.unwrap_model(self.model).pretrained_model

    def _log_probs(self, model, sample: Rollout) -> torch.Tensor:
        return completion_log_probs(model, sample, temperature=1.0, chunk_size=self.loss_chunk_size,
                                    chunked=self._uses_chunked_loss(model))[0]

    def _policy_outputs(self, model, sample: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, values) from one forward of `model` (the value-head model, DDP-wrapped while training, so the
        forward goes through the wrapper and gradients synchronise): the final hidden states feed both heads."""
        policy = self.accelerator.unwrap_model(model).pretrained_model
        with _final_hidden(policy) as captured:
            all_values = model(**scoring_inputs(sample))
        logps, _ = log_probs_from_hidden(captured["hidden"], policy.get_output_embeddings(), sample, temperature=1.0,
                                         chunk_size=self.loss_chunk_size, chunked=self._uses_chunked_loss(policy))
        start, width = sample.prompt_ids.shape[1], sample.completion_ids.shape[1]
        # the value at position t is that of the state before completion token t is sampled (TRL's alignment)
        values = all_values[:, start - 1:start - 1 + width]
        return logps, values * sample.completion_mask

    # -- loss ------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "ppo_rows" not in inputs:  # evaluation: the reward of completions sampled now
            loss = self._eval_reward(inputs)
            return (loss, {"loss": loss}) if return_outputs else loss
        rows, batch = inputs["ppo_rows"], self._batch
        sample = _rows(batch["sample"], rows)
        with self.accelerator.autocast():
            logps, values = self._policy_outputs(model, sample)
        pick = torch.as_tensor(rows, device=logps.device)
        mask = sample.completion_mask.to(logps.dtype)
        out = ppo_losses(logps, batch["logps"][pick], values, batch["values"][pick], batch["returns"][pick],
                         batch["advantages"][pick], mask, cliprange=CLIPRANGE, cliprange_value=CLIPRANGE_VALUE,
                         vf_coef=VF_COEF)
        loss = out.loss
        ratio = torch.exp(((logps - batch["logps"][pick]) * mask).sum() / mask.sum().clamp(min=1))
        if ratio > RATIO_THRESHOLD:  # TRL skips a mini-batch whose ratio ran away (its loss counts zero)
            loss = loss * 0.0
        for name in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl"):
            self.metrics.add("train", name.replace("approx_kl", "approxkl"), getattr(out, name).reshape(1))
        return (loss, {"loss": loss}) if return_outputs else loss

    @torch.no_grad()
    def _eval_reward(self, inputs: dict) -> torch.Tensor:
        sample = self._sample({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
                              list(range(inputs["input_ids"].shape[0])), self.state.global_step)
        scores = self.reward_model(sample)
        self.metrics.add("eval", "reward", scores)
        return -scores.mean().to(self.args.device)  # lower is better, as for any eval_loss

    # -- saving: the policy as usual, plus value_head.safetensors ----------------------------------------

    def _uses_chunked_loss(self, model=None) -> bool:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        # the trained module is the value-head wrapper; the vocabulary projection is its policy's
        return super()._uses_chunked_loss(model.pretrained_model if isinstance(model, ValueHeadModel) else model)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            # what a resumed run needs beyond the weights: the KL coefficient and the score statistics so far
            state = {"kl_coef": self.kl_control.value, "score_moments": vars(self.score_moments)}
            (Path(output_dir or self.args.output_dir) / PPO_STATE_FILE).write_text(json.dumps(state))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state_file = Path(resume_from_checkpoint) / PPO_STATE_FILE
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            self.kl_control.value = state["kl_coef"]
            vars(self.score_moments).update(state["score_moments"])


@contextmanager
def _final_hidden(policy):
    """Keeps the input of the LM head (the final hidden states) of the forwards run inside. Registered before
    `forward_hidden`'s own pre-hook, so it sees the hidden states whether or not the projection is then skipped."""
    captured: dict = {}
    head = getattr(policy, "module", policy).get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: captured.__setitem__("hidden", args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def _rows(sample: Rollout, rows: list[int]) -> Rollout:
    index = torch.as_tensor(rows, device=sample.prompt_ids.device)
    return Rollout(sample.prompt_ids[index], sample.prompt_mask[index], sample.completion_ids[index],
                   sample.completion_mask[index], sample.truncated[index])


def _concat(chunks: list[Rollout], pad_id: int) -> Rollout:
    """One Rollout of chunks sampled apart: completions right-padded to the longest (prompts already share a width)."""
    width = max(c.completion_ids.shape[1] for c in chunks)
    return Rollout(
        torch.cat([c.prompt_ids for c in chunks]), torch.cat([c.prompt_mask for c in chunks]),
        torch.cat([F.pad(c.completion_ids, (0, width - c.completion_ids.shape[1]), value=pad_id) for c in chunks]),
        torch.cat([F.pad(c.completion_mask, (0, width - c.completion_mask.shape[1]), value=0) for c in chunks]),
        torch.cat([c.truncated for c in chunks]),
    )


def run_ppo(cfg: RunConfig) -> TrainResult:
    from lmforge.train.rl.reward_model import RewardModelScorer
    from lmforge.train.workflow import load_training_model

    rl, training = cfg.rl, cfg.training
    if not rl.reward_model:
        raise ConfigError("stage ppo needs 'reward_model': the output_dir of a 'stage: rm' run")
    tokenizer, template, data = load_conversation_data(cfg)
    per_rollout = (rl.ppo_buffer_size * training.per_device_train_batch_size * training.gradient_accumulation_steps
                   * int(os.environ.get("WORLD_SIZE", "1")))
    if training.do_train and data.train is not None and len(data.train) < per_rollout:
        raise ConfigError(f"stage ppo: {len(data.train)} training prompts are fewer than one rollout batch "
                          f"(ppo_buffer_size x per_device_train_batch_size x gradient_accumulation_steps x processes = "
                          f"{per_rollout})")
    backbone = load_training_model(cfg)
    model = ValueHeadModel(backbone).to(next(backbone.parameters()).device)
    model.v_head.requires_grad_(training.do_train)
    reward_model = RewardModelScorer.load(rl.reward_model, cfg.model, len(tokenizer))
    reference = load_reference(cfg, backbone)
    trainer = build_trainer(
        cfg, model, tokenizer, data, build_collator(cfg, tokenizer), trainer_class=PPOTrainer,
        preference=cfg.preference, reference=reference, rl=rl, sampling=cfg.generation.sampling(),
        repetition_penalty=cfg.generation.repetition_penalty, max_new_tokens=cfg.generation.max_new_tokens,
        reward_model=reward_model, stop_ids=template.stop_token_ids(tokenizer),
    )
    return train_and_save(trainer, cfg, tokenizer, template.name)
