"""Token ids in, text pieces out: incremental detokenization with stop strings, for streaming answers.

    text = TextStream(tokenizer, stops=["\\n\\n"])
    for ids in new_tokens_as_they_come:
        piece = text.push(ids)        # the text that is now certain ("" while a character or a stop is pending)
        if text.stopped:              # a stop string appeared: the answer ends before it
            break
    rest = text.finish()              # what was held back, once the tokens end

Each piece is the difference between decoding the recent tokens with and without the new ones (the offsets vLLM
and TGI use), so multi-token characters and tokenizers that merge spaces come out whole, and the pieces together
are the decoded answer. Text that could be the beginning of a stop string is held back until the next token
decides it; the stop string itself and everything after it are never released.
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops: list[str] | tuple[str, ...] = (), skip_special_tokens: bool = True):
        self.tokenizer, self.skip_special_tokens = tokenizer, skip_special_tokens
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._ids: list[int] = []
        self._prefix = self._read = 0  # decode window: ids[_prefix:_read] were turned into text already
        self.text = ""
        """Everything decoded so far (cut before the stop string once one is found)."""
        self._sent = 0
        self.stopped = False

    def push(self, ids: list[int]) -> str:
        """The text released by these new token ids."""
        if self.stopped:
            return ""
        for token in ids:
            self._ids.append(token)
            self.text += self._delta()
        cut = min((i for i in (self.text.find(s, max(0, self._sent - self._hold)) for s in self.stops) if i >= 0),
                  default=-1)
        if cut >= 0:
            self.stopped, self.text = True, self.text[:cut]
            return self._release(len(self.text))
        return self._release(len(self.text) - self._hold)

    def finish(self) -> str:
        """The held-back rest, once no more tokens come."""
        return self._release(len(self.text))

    def _delta(self) -> str:
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # a character still split across tokens, or a token that adds no text yet
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before):]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens) if ids else ""

    def _release(self, upto: int) -> str:
        if upto <= self._sent:
            return ""
        piece, self._sent = self.text[self._sent:upto], upto
        return piece
