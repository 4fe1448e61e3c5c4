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
full-vocabulary fp32 logits of a whole batch never exist at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

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
    def __init__(self, model, tokenizer, *, batch_size: int = 8, max_length: int | None = None,
                 logit_rows: int = 4096, progress: bool | None = None):
        """`logit_rows`: continuation positions projected to the vocabulary at once (memory: rows x vocab fp32).
        `progress`: tqdm bars on stderr (None: only on a terminal)."""
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = max(1, int(batch_size))
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
    def loglikelihood(self, pairs: Sequence[tuple[str, str]], desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether greedy decoding would produce the continuation exactly."""
        return self.score_tokens([self.encode_pair(c, x) for c, x in pairs], desc=desc)

    def loglikelihood_rolling(self, texts: Sequence[str], desc: str = "perplexity") -> list[float]:
        """log P(text) of whole documents, in windows of the model's length (each predicting new tokens only,
        conditioned on the prefix token for the first window), summed per document."""
        windows, owner = [], []
        for i, text in enumerate(texts):
            for window in self.rolling_windows(self.encode(text)):
                windows.append(window)
                owner.append(i)
        scores = self.score_tokens(windows, desc=desc)
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
    def score_tokens(self, requests: Sequence[tuple[list[int], list[int]]], desc: str = "scoring") -> list[tuple[float, bool]]:
        """(sum of log-probs, is_greedy) of each continuation after its context, in request order."""
        fed: dict[tuple[int, ...], list[int]] = {}
        for i, (context, continuation) in enumerate(requests):
            if not continuation:
                raise ValueError("a continuation encodes to no tokens")
            # the last token is only predicted, never fed; a too-long pair loses its oldest tokens
            fed.setdefault(tuple((context + continuation)[-(self.max_length + 1):][:-1]), []).append(i)
        # Requests that feed identical tokens share one row: the choices of a question that are one token each
        # (letters, numbers) differ only in the token predicted at the end, so the question runs once, not once
        # per choice (lm-eval's one-token-continuation cache does the same).
        # Longest first: the first batch shows the worst memory at once, and lengths in a batch are similar.
        rows = sorted(fed, key=lambda ids: (-len(ids), ids))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=desc, unit="req", disable=self._bar_off(), leave=False)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            wanted = [(row, i) for row, ids in enumerate(batch) for i in fed[ids]]
            scores = self._score_batch(batch, [(row, requests[i][1]) for row, i in wanted])
            for (_, i), value in zip(wanted, scores):
                results[i] = value
            bar.update(len(wanted))
        bar.close()
        return results  # type: ignore[return-value]

    def _score_batch(self, inputs: list[tuple[int, ...]], wanted: list[tuple[int, list[int]]]) -> list[tuple[float, bool]]:
        """Run the right-padded `inputs` once; score each (row, continuation): its tokens end that row."""
        width = max(len(ids) for ids in inputs)
        input_ids = torch.full((len(inputs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, ids in enumerate(inputs):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        device = self.device
        _, hidden = forward_hidden(self.model, {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
                                                "use_cache": False})
        spans = [(row, len(inputs[row]) - len(cont), len(inputs[row])) for row, cont in wanted]
        rows = torch.cat([torch.full((end - begin,), row) for row, begin, end in spans]).to(device)
        cols = torch.cat([torch.arange(begin, end) for _, begin, end in spans]).to(device)
        targets = torch.cat([torch.tensor(cont) for _, cont in wanted]).to(device)
        picked = hidden[rows, cols]  # [continuation tokens of the batch, hidden]
        logprobs, greedy = [], []
        for chunk in range(0, picked.shape[0], self.logit_rows):
            part = slice(chunk, chunk + self.logit_rows)
            logits = self.head(picked[part]).float()
            if self.softcap:  # Gemma-style final soft-capping happens after the head inside the model's forward
                logits = torch.tanh(logits / self.softcap) * self.softcap
            logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, targets[part, None]).squeeze(1))
            greedy.append(logits.argmax(dim=-1) == targets[part])
        logprob, hit = torch.cat(logprobs).cpu(), torch.cat(greedy).cpu()
        out, offset = [], 0
        for _, continuation in wanted:
            n = len(continuation)
            out.append((float(logprob[offset:offset + n].sum()), bool(hit[offset:offset + n].all())))
            offset += n
        return out

    # -- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, contexts: Sequence[str], until: Sequence[str], max_gen_toks: int = 256,
                       desc: str = "generate") -> list[str]:
        """Greedy continuations of each context, cut before the first stop string (and the EOS token)."""
        from transformers import StoppingCriteriaList

        stops = [s for s in until if s]
        eos = self.tokenizer.decode([self.tokenizer.eos_token_id]) if self.tokenizer.eos_token_id is not None else None
        if eos and eos not in stops:
            stops.append(eos)
        room = self.max_length - max_gen_toks  # lm-eval keeps the context's last tokens that leave room to generate
        if room <= 0:
            raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in {self.max_length} tokens")
        encoded = [self.encode(c)[-room:] for c in contexts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        texts: list[str] = [""] * len(encoded)
        bar = tqdm(total=len(encoded), desc=desc, unit="item", disable=self._bar_off(), leave=False)
        device = self.device
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every row's next token is at the same column
                ids = encoded[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            out = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_gen_toks,
                do_sample=False, pad_token_id=self.pad_id, use_cache=True,
                stopping_criteria=StoppingCriteriaList([_StopStrings(self.tokenizer, stops, width)]),
            )
            for row, i in enumerate(batch):
                text = self.tokenizer.decode(out[row, width:].tolist(), skip_special_tokens=True)
                for stop in stops:
                    text = text.split(stop)[0]
                texts[i] = text
            bar.update(len(batch))
        bar.close()
        return texts

    def _bar_off(self) -> bool | None:
        return None if self.progress is None else not self.progress


class _StopStrings:
    """Stops each row once its generated text contains a stop string (the text is cut there afterwards)."""

    def __init__(self, tokenizer, stops: list[str], prompt_width: int):
        self.tokenizer, self.stops, self.prompt_width = tokenizer, stops, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = [any(stop in self.tokenizer.decode(row[self.prompt_width:].tolist(), skip_special_tokens=False)
                    for stop in self.stops) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
