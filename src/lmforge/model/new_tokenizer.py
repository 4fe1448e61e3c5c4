"""Train a small byte-level BPE tokenizer on the spot, for test fixtures and demo models.

    from lmforge.model.new_tokenizer import build_tokenizer
    from lmforge.model.special_tokens import CHATML_TOKENS

    tokenizer = build_tokenizer(vocab_size=1024, special_tokens=CHATML_TOKENS)
    tokenizer.save_pretrained("models/tiny", save_jinja_files=False)
    # AutoTokenizer.from_pretrained("models/tiny") reloads it unchanged.

Nothing is downloaded: the BPE merges are learned from a short corpus shipped in `assets/corpus.txt`
(original text, ~36 KB: prose, dialogues, code, data formats and a dozen scripts), which takes well under a
second. The same arguments always give the same vocabulary, merges and ids.

The pipeline is Qwen2's: NFC normalisation, a regex split into words / single digits / punctuation runs /
whitespace runs, then GPT-2's byte-to-unicode mapping. Every byte has its own token, so any text encodes
without an unknown token, and `decode(encode(text)) == text` for any NFC-normalised text (text that is not
NFC comes back composed, as with the real Qwen2 tokenizer).

How pieces join (this matters to chat templates, which encode a prompt in pieces):
- Special tokens are matched before the pre-tokenizer runs and never strip neighbouring whitespace, so
  "<|im_start|>user\\n" encodes the same in one string as "<|im_start|>" + "user\\n" encoded apart.
- A leading space belongs to the next word (" world" -> "Ġworld"), so "Hello" + " world" encoded apart
  equals "Hello world" encoded at once.
- A run of whitespace is one pre-token: "\\n\\n" is one token where "\\n" + "\\n" is two, and "a " + "b" is
  ["a", "Ġ"] + ["b"] where "a b" is ["a", "Ġb"]. No byte-level BPE can make such cuts agree; templates
  should cut after newlines, not between a space and the word it leads.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

from lmforge.model.special_tokens import ENDOFTEXT  # noqa: E402 - the default eos / pad token below

CORPUS_FILE = Path(__file__).parent / "assets" / "corpus.txt"

# The split regex, one alternative per line. It must equal the pattern transformers 5 hard-codes in
# `Qwen2Tokenizer`: AutoTokenizer loads any `model_type: qwen2` directory through that class, which keeps
# tokenizer.json's vocab and merges but rebuilds the normaliser and pre-tokenizer from its own constants.
# Were ours different, a saved tiny-qwen2 would tokenize differently after reloading
# (tests/model/test_from_config.py checks that it does not).
_SPLIT_ALTERNATIVES = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",  # English contractions, in any case
    r"[^\r\n\p{L}\p{N}]?\p{L}+",  # a word, with at most one leading non-letter (usually a space)
    r"\p{N}",  # digits one at a time, so numbers are never merged into arbitrary chunks
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",  # a punctuation run, with an optional leading space and trailing newlines
    r"\s*[\r\n]+",  # newlines with the whitespace before them
    r"\s+(?!\S)",  # whitespace, leaving the last space to lead the next word
    r"\s+",  # any remaining whitespace
)
SPLIT_PATTERN = "|".join(_SPLIT_ALTERNATIVES)


def build_tokenizer(
    vocab_size: int = 1024,
    special_tokens: list[str] | None = None,
    chat_template: str | None = None,
    corpus: list[str] | None = None,
    *,
    eos_token: str = ENDOFTEXT,
    pad_token: str | None = ENDOFTEXT,
    bos_token: str | None = None,
    add_bos_token: bool = False,
    model_max_length: int = 4096,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it for transformers.

    Args:
        vocab_size: Target size including the special tokens (`len(tokenizer)`). A corpus too small to
            learn that many merges stops early; the returned tokenizer is then smaller, never larger.
        special_tokens: Extra control tokens (e.g. `CHATML_TOKENS`). Each becomes one id that text never
            splits. `<|endoftext|>`, eos, bos and pad are added anyway.
        chat_template: Jinja chat template stored with the tokenizer (`apply_chat_template` uses it).
        corpus: Training texts; defaults to the shipped `assets/corpus.txt`.
        eos_token: End-of-sequence token (added as a special token if it is not among the others).
        pad_token: Padding token, or None for none.
        bos_token: Beginning-of-sequence token, or None (Qwen2 has none; Llama 3 has one).
        add_bos_token: Prepend `bos_token` whenever text is encoded with `add_special_tokens=True`, as
            the Llama 3 tokenizer does.
        model_max_length: Longest sequence the tokenizer is said to support.

    Returns:
        A fast tokenizer whose special tokens take the ids after the learned vocabulary, in the order
        `<|endoftext|>`, then `special_tokens`, then eos/bos/pad if not already present.
    """
    specials = _unique([ENDOFTEXT, *(special_tokens or []), eos_token, bos_token, pad_token])
    if add_bos_token and bos_token is None:
        raise ValueError("add_bos_token=True needs a bos_token")
    n_learned = vocab_size - len(specials)
    if n_learned < 256:
        raise ValueError(
            f"vocab_size={vocab_size} leaves {n_learned} ids after {len(specials)} special tokens; "
            "a byte-level BPE needs at least 256 (one per byte)"
        )

    backend = _train_bpe(tuple(corpus) if corpus is not None else None, n_learned)
    backend = Tokenizer.from_str(backend.to_str())  # a fresh copy: the cached one is shared
    # normalized=False: special tokens are matched on the raw text, before NFC; lstrip/rstrip=False keeps
    # the whitespace around them in the text, so templates see exactly the characters they wrote.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=eos_token,
        pad_token=pad_token,
        bos_token=bos_token,
        unk_token=None,  # byte-level: there is nothing unknown
        extra_special_tokens=[t for t in specials if t not in (eos_token, pad_token, bos_token)],
        add_bos_token=add_bos_token,
        chat_template=chat_template,
        model_max_length=model_max_length,
        # Cleaning up " ." -> "." after decoding would break round trips; BPE decodes exactly already.
        clean_up_tokenization_spaces=False,
    )


def read_corpus() -> list[str]:
    """The shipped training corpus, cut into paragraphs (each keeps its trailing blank line)."""
    text = CORPUS_FILE.read_text(encoding="utf-8")
    paragraphs = text.split("\n\n")
    return [p + "\n\n" for p in paragraphs[:-1]] + paragraphs[-1:]


@cache
def _train_bpe(corpus: tuple[str, ...] | None, n_learned: int) -> Tokenizer:
    """Learn `n_learned` tokens (256 bytes + merges); cached because every test fixture asks again."""
    backend = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            # use_regex=False: the split above already cut the words; this only maps bytes to symbols.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=n_learned,
        min_frequency=0,
        show_progress=False,
        # All 256 byte symbols up front, even those the corpus lacks, so no text is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(list(corpus) if corpus is not None else read_corpus(), trainer)
    return backend


def _unique(tokens: list[str | None]) -> list[str]:
    """Drop Nones and repeats, keeping first-seen order (the order fixes the ids)."""
    return list(dict.fromkeys(t for t in tokens if t is not None))
