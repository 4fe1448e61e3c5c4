"""Batched log-likelihoods and greedy generations of a causal LM, computed as lm-evaluation-harness's `hf`
model computes them: `Scorer`.

    scorer = Scorer(model, tokenizer, batch_size=16)
    scorer.loglikelihood([("Question: 2+2?\\nAnswer:", " 4")])    # [(log P(" 4" | context), is_greedy)]
    scorer.loglikelihood_rolling(["a whole document"])             # [log P(document)]
    scorer.generate_until(["Q: 2+2?\\nA:"], until=["\\n"], max_gen_toks=16)

Tokenization follows lm-eval so the numbers agree: trailing spaces of a context move to the front of the
continuation; the context + continuation string is encoded whole and split after the context's own token
count (so a merge across the boundary is scored as the tokenizer would see the text); an empty context is
the prefix token (BOS, else EOS). Requests are scored longest first, `batch_size` at a time, right-padded.

Why it is fast and small: the vocabulary projection runs only at the continuation positions (the decoder's
hidden states are taken before the LM head, see model/hidden_states.py), in chunks of `logit_rows`, so the
full-vocabulary fp32 logits of a whole batch never exist at once. Generations go through the continuous-batching
engine (`inference/offline.generate_all`), `batch_size` decoding together; each is what an unbatched greedy
`generate` gives, cut before its first stop string.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from lmforge.eval.shared_prefix import PackedRow, pack_requests, shared_prefix_mask
from lmforge.inference.batching import SamplingParams
from lmforge.inference.offline import generate_all
from lmforge.model.hidden_states import forward_hidden

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither the config nor the tokenizer gives a length
TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length


def max_length_of(model, tokenizer) -> int:
    """The model's context length: config n_positions / max_position_embeddings / n_ctx, else the tokenizer's
    model_max_length, else 2048 (lm-eval's order)."""
    config = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH


class Scorer:
    def __init__(self, model, tokenizer, *, batch_size: int | str = 8, max_length: int | None = None,
                 logit_rows: int = 4096, progress: bool | None = None, share_prefix: bool = True,
                 max_batch_size: int = 64):
        """`batch_size`: sequences per forward pass, or "auto": start at `max_batch_size` and halve after an
        out-of-memory error. `logit_rows`: continuation positions projected to the vocabulary at once (memory:
        rows x vocab fp32). `progress`: tqdm bars on stderr (None: only on a terminal). `share_prefix`: the
        choices of a question share one sequence (False: one sequence per request, as lm-eval)."""
        self.model, self.tokenizer = model, tokenizer
        if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or 'auto', got {batch_size!r}")
        self.batch_size = batch_size
        self.auto_batch = max_batch_size
        # a custom 4D mask reaches only the eager and sdpa attention kernels unchanged
        self.share_prefix = share_prefix and getattr(_config_of(model), "_attn_implementation", "sdpa") in ("sdpa", "eager")
        self._prefix_checked = False
        self.max_length = max_length or max_length_of(model, tokenizer)
        self.logit_rows = logit_rows
        self.progress = progress
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.head = getattr(model, "module", model).get_output_embeddings()
        self.softcap = getattr(getattr(model.config, "text_config", None) or model.config, "final_logit_softcapping", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype attention runs in (a mask must match it): the output head's weight dtype."""
        weight = getattr(self.head, "weight", None)
        return weight.dtype if weight is not None and weight.dtype.is_floating_point else torch.float32

    # -- tokenization ------------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """The tokenizer's own special-token default, except for text that already starts with the prefix token."""
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None:
            prefix = self.tokenizer.decode([self.prefix_token_id])
            if prefix and text.startswith(prefix):
                kwargs = {"add_special_tokens": False}
        return self.tokenizer.encode(text, **kwargs)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            cont = self.encode(continuation, add_special_tokens=False)
            return ([self.prefix_token_id], cont) if cont[:1] != [self.prefix_token_id] else (cont[:1], cont[1:])
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        context_ids = self.encode(context)
        return context_ids, whole[len(context_ids):]

    # -- log-likelihoods ---------------------------------------------------------------------------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]], desc: str = "loglikelihood",
                      items: int | None = None) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether greedy decoding would produce the continuation exactly.
        `items`: the questions these pairs come from, for the progress bar's items/s."""
        return self.score_tokens([self.encode_pair(c, x) for c, x in pairs], desc=desc, items=items)

    def loglikelihood_rolling(self, texts: Sequence[str], desc: str = "perplexity") -> list[float]:
        """log P(text) of whole documents, in windows of the model's length (each predicting new tokens only,
        conditioned on the prefix token for the first window), summed per document."""
        windows, owner = [], []
        for i, text in enumerate(texts):
            for window in self.rolling_windows(self.encode(text)):
                windows.append(window)
                owner.append(i)
        scores = self.score_tokens(windows, desc=desc, items=len(texts))
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, scores):
            totals[i] += ll
        return totals

    def rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        """Disjoint (context, continuation) windows covering `tokens` (lm-eval's get_rolling_token_windows with
        context_len 1, made disjoint)."""
        if not tokens:
            return []
        n = self.max_length
        first = min(n, len(tokens))
        windows = [([self.prefix_token_id], tokens[:first])]
        done = first
        while done < len(tokens):
            size = min(len(tokens) - done, n)
            end = done + size
            window_input = tokens[max(0, end - n - 1):end - 1]
            windows.append((window_input[:len(window_input) - (size - 1)], tokens[end - size:end]))
            done = end
        return windows

    @torch.no_grad()
    def score_tokens(self, requests: Sequence[tuple[list[int], list[int]]], desc: str = "scoring",
                     items: int | None = None) -> list[tuple[float, bool]]:
        """(sum of log-probs, is_greedy) of each continuation after its context, in request order.

        Requests with the same context share one fed sequence (eval/shared_prefix.py); sequences run longest
        first (the first batch shows the worst memory at once, and lengths in a batch are similar), those that
        need the block mask in batches of their own. `items`: what the progress bar counts (questions rather
        than requests)."""
        rows = pack_requests(requests, self.max_length, share=self.share_prefix)
        plain = sorted((r for r in rows if not r.shared), key=lambda r: (-len(r), r.context))
        shared = sorted((r for r in rows if r.shared), key=lambda r: (-len(r), r.context))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        scale = (items / len(requests)) if items and requests else 1
        bar = tqdm(total=len(requests), desc=desc, unit="item" if items else "req", unit_scale=scale,
                   disable=self._bar_off(), leave=False)
        for group in (shared, plain):  # shared first: its one-time check may turn sharing off
            start = 0
            while start < len(group):
                batch = group[start:start + self._batch_rows()]
                try:
                    scores = self._score_rows(batch)
                except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried, see _shrink_after
                    self._shrink_after(exc)
                    continue
                if batch[0].shared and not self._prefix_checked:
                    self._check_shared_prefix(batch[0], scores)
                    if not self.share_prefix:  # the model ignores the block mask: score every request alone
                        return self.score_tokens(requests, desc=desc, items=items)
                for index, value in scores.items():
                    results[index] = value
                bar.update(len(scores))
                start += len(batch)
        bar.close()
        return results  # type: ignore[return-value]

    def _batch_rows(self) -> int:
        return self.auto_batch if self.batch_size == "auto" else self.batch_size

    def _shrink_after(self, exc: Exception) -> None:
        """batch_size auto: halve the batch after an out-of-memory error and retry (lm-eval's auto starts at 64
        and halves the same way); any other error, or one at batch 1, is raised."""
        if self.batch_size != "auto" or self.auto_batch == 1 or not _is_out_of_memory(exc):
            raise exc
        self.auto_batch //= 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        from lmforge.logging import get_logger

        get_logger(__name__).info("batch_size auto: out of memory, %d sequences per batch now", self.auto_batch)

    def _check_shared_prefix(self, row: PackedRow, scores: dict[int, tuple[float, bool]]) -> None:
        """Once per scorer: the continuation fed last in the first shared row (the one that would see the other
        choices if the mask were dropped), scored alone, must give the same log-likelihood; an architecture that ignores a custom mask or position ids fails here, and its
        requests are then scored one sequence each, as lm-eval scores them."""
        self._prefix_checked = True
        index, _, tokens = max(row.targets, key=lambda t: t[1][-1])
        alone = pack_requests([(list(row.context), tokens)], self.max_length)
        (value,) = self._score_rows(alone).values()
        if abs(value[0] - scores[index][0]) > 1e-3 * max(1.0, abs(value[0])):
            from lmforge.logging import get_logger

            get_logger(__name__).warning(
                "%s ignores a custom attention mask (shared-context log-likelihood %.6f, alone %.6f): each choice "
                "is scored as a sequence of its own", type(self.model).__name__, scores[index][0], value[0])
            self.share_prefix = False

    def _score_rows(self, rows: list[PackedRow]) -> dict[int, tuple[float, bool]]:
        """Run the right-padded rows once; {request index: (log-likelihood, is_greedy)} of every target."""
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)] = torch.tensor(row.tokens)
            position_ids[r, :len(row)] = torch.tensor(row.positions())
            mask[r, :len(row)] = 1
        device = self.device
        inputs = {"input_ids": input_ids.to(device), "use_cache": False}
        if rows[0].shared:
            inputs["attention_mask"] = shared_prefix_mask(rows, width, self.dtype).to(device)
            inputs["position_ids"] = position_ids.to(device)
        else:  # plain causal rows: the model's own mask and positions, as lm-eval runs them
            inputs["attention_mask"] = mask.to(device)
        _, hidden = forward_hidden(self.model, inputs)
        wanted = [(r, index, positions, tokens) for r, row in enumerate(rows) for index, positions, tokens in row.targets]
        row_of = torch.cat([torch.full((len(p),), r) for r, _, p, _ in wanted]).to(device)
        cols = torch.cat([torch.tensor(p) for _, _, p, _ in wanted]).to(device)
        targets = torch.cat([torch.tensor(t) for _, _, _, t in wanted]).to(device)
        picked = hidden[row_of, cols]  # [continuation tokens of the batch, hidden]
        logprobs, greedy = [], []
        for chunk in range(0, picked.shape[0], self.logit_rows):
            part = slice(chunk, chunk + self.logit_rows)
            logits = self.head(picked[part]).float()
            if self.softcap:  # Gemma-style final soft-capping happens after the head inside the model's forward
                logits = torch.tanh(logits / self.softcap) * self.softcap
            logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, targets[part, None]).squeeze(1))
            greedy.append(logits.argmax(dim=-1) == targets[part])
        logprob, hit = torch.cat(logprobs).cpu(), torch.cat(greedy).cpu()
        out, offset = {}, 0
        for _, index, _, tokens in wanted:
            n = len(tokens)
            out[index] = (float(logprob[offset:offset + n].sum()), bool(hit[offset:offset + n].all()))
            offset += n
        return out

    # -- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, contexts: Sequence[str], until: Sequence[str], max_gen_toks: int = 256,
                       desc: str = "generate") -> list[str]:
        """Greedy continuations of each context, cut before the first stop string (and the EOS token)."""
        stops = [s for s in until if s]
        eos = self.tokenizer.decode([self.tokenizer.eos_token_id]) if self.tokenizer.eos_token_id is not None else None
        if eos and eos not in stops:
            stops.append(eos)
        room = self.max_length - max_gen_toks  # lm-eval keeps the context's last tokens that leave room to generate
        if room <= 0:
            raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in {self.max_length} tokens")
        encoded = [self.encode(c)[-room:] for c in contexts]
        params = SamplingParams(max_tokens=max_gen_toks, stop_token_ids=tuple(self._eos_ids()))
        bar = tqdm(total=len(encoded), desc=desc, unit="item", disable=self._bar_off(), leave=False)
        while True:
            try:  # through the batching engine: a finished row's slot goes to the next context at once
                answers = generate_all(self.model, encoded, params, max_num_seqs=self._batch_rows(),
                                       tokenizer=self.tokenizer, stops=stops, progress=bar)
                break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                self._shrink_after(exc)
                bar.reset()
        bar.close()
        return [answer.text for answer in answers]

    def _eos_ids(self) -> list[int]:
        """The tokenizer's EOS and the model's generation-config EOS ids (what `generate` would stop at)."""
        ids = [self.tokenizer.eos_token_id]
        config_eos = getattr(getattr(getattr(self.model, "module", self.model), "generation_config", None),
                             "eos_token_id", None)
        ids += config_eos if isinstance(config_eos, list) else [config_eos]
        return sorted({i for i in ids if i is not None})

    def _bar_off(self) -> bool | None:
        return None if self.progress is None else not self.progress


def _config_of(model):
    return getattr(getattr(model, "module", model), "config", None)


def _is_out_of_memory(exc: Exception) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))
