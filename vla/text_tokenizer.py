"""A small byte-level BPE text tokenizer trained in-process, for the built-in tiny VLM.

Byte-level means any instruction encodes (no unknown tokens); the merges are learned from a
short corpus of manipulation language so common words become single tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<image>"]

_CORPUS = [
    "pick up the {c} {o}",
    "lift the {c} {o}",
    "put the {c} {o} on the {t}",
    "place the {c} {o} in the {t}",
    "push the {c} {o} to the {t}",
    "open the {t} and put the {o} inside",
    "move the {o} next to the {t}",
    "stack the {c} {o} on top of the {c} {o}",
    "turn on the stove and put the moka pot on it",
    "put both the alphabet soup and the tomato sauce in the basket",
]
_COLOURS = ["red", "green", "blue", "yellow", "purple", "black", "white", "orange"]
_OBJECTS = ["cube", "block", "bowl", "plate", "mug", "bottle", "can", "spoon", "carrot", "eggplant"]
_TARGETS = ["plate", "pad", "bowl", "basket", "drawer", "towel", "cabinet", "left", "right", "tray"]


def build_text_tokenizer(vocab_size: int = 512, specials: list[str] | None = None) -> PreTrainedTokenizerFast:
    """specials: the special tokens, first `SPECIAL_TOKENS`' four (pad, bos, eos, image) and then
    any a processor needs besides (Idefics3's image markup, for the benchmark's SmolVLM shape)."""
    specials = specials or SPECIAL_TOKENS
    corpus = [s.format(c=c, o=o, t=t) for s in _CORPUS for c in _COLOURS for o in _OBJECTS for t in _TARGETS[:3]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", padding_side="right"
    )
