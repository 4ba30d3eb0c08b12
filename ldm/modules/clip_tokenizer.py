"""CLIP's byte-level BPE tokenizer, equal to the reference's (transformers 4.19 ``CLIPTokenizer`` + ftfy).

Per caption: ``ftfy.fix_text`` (which also unescapes HTML entities when the text has no ``<``),
whitespace runs → one space, strip, lower case;
split with CLIP's regex; map each piece's UTF-8 bytes through the GPT-2 byte→unicode table; BPE with
``</w>`` marking a word end. Ids are ``[BOS] + first (max_length − 2) ids + [EOS]`` padded with
``<|endoftext|>`` (49407, the same id as EOS) — not with 0 as ``open_clip.tokenize`` pads.

The vocabulary comes from open_clip's bundled ``bpe_simple_vocab_16e6.txt.gz`` (only the data file is
read; open_clip is never imported), or from a local CLIP folder's ``vocab.json`` + ``merges.txt``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Sequence

import ftfy
import regex
import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 48894  # lines 1..48894 of the merge file (line 0 is a header): 49408 tokens in all
PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)
INSTALL_HINT = ("install it with `pip install --no-deps open_clip_torch==3.3.0` (ships the vocabulary file), "
                "or pass a local CLIP folder holding vocab.json and merges.txt")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-unicode map (printable bytes map to themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # printable bytes first, then the others: the order of the vocabulary's first 256 ids


def bundled_vocab_file() -> Path:
    """Path of open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (raises with an install hint if absent)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(f"CLIP BPE vocabulary not found (open_clip's bpe_simple_vocab_16e6.txt.gz): {INSTALL_HINT}")


def read_merges_gz(path: str | os.PathLike) -> list[tuple[str, str]]:
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1:N_MERGES + 1]
    return [tuple(line.split()) for line in lines]


def clean_text(text: str) -> str:
    """ftfy fixes, whitespace collapsing, lower case (the reference tokenizer's cleaning)."""
    return regex.sub(r"\s+", " ", ftfy.fix_text(text)).strip().lower()


class CLIPBPETokenizer:
    """Text → CLIP token ids.

    Args:
        folder: optional local CLIP model/tokenizer folder with ``vocab.json`` and ``merges.txt``;
            default: open_clip's bundled vocabulary file.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.byte_encoder = bytes_to_unicode()
        if folder is not None:
            folder = Path(folder)
            vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
            for f in (vocab_file, merges_file):
                if not f.is_file():
                    raise FileNotFoundError(f"{f}: tokenizer file not found; {INSTALL_HINT}")
            self.encoder = json.loads(vocab_file.read_text(encoding="utf-8"))
            lines = merges_file.read_text(encoding="utf-8").split("\n")
            merges = [tuple(line.split()) for line in lines[1:] if line and not line.startswith("#")]
        else:
            merges = read_merges_gz(bundled_vocab_file())
            symbols = list(self.byte_encoder.values())
            vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
            self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.bos_id, self.eos_id = self.encoder[BOS], self.encoder[EOS]
        self.pad_id = self.eos_id
        self._cache: dict[str, list[str]] = {BOS: [BOS], EOS: [EOS]}

    def bpe(self, token: str) -> list[str]:
        """Merge the characters of one pre-token (its last one marked with ``</w>``) by merge rank."""
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of one caption, without BOS/EOS."""
        ids = []
        for piece in PATTERN.findall(clean_text(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(piece))
        return ids

    def __call__(self, texts: Sequence[str] | str, max_length: int = 77) -> torch.Tensor:
        """``(B, max_length)`` int64 ids: BOS, up to ``max_length − 2`` ids, EOS, EOS-padding."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.bos_id, *self.encode(text)[:max_length - 2], self.eos_id]
            out[row, :len(ids)] = torch.tensor(ids)
        return out
