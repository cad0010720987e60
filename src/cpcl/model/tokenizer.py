"""OpenAI CLIP's byte-level BPE tokenizer, id-for-id identical to OpenAI's `SimpleTokenizer`.

Vocabulary (49,408 ids with the shipped merges file), in id order:
  1. the 256 byte symbols of `bytes_to_unicode()` (printable Latin-1 bytes first),
  2. the same 256 symbols with the word-end marker `</w>` appended,
  3. the concatenated pairs of the first `NUM_MERGES` merges of the file (header line skipped),
  4. `<|startoftext|>` and `<|endoftext|>`.

Encoding: clean the text (ftfy, html unescape twice, collapse whitespace, lower case), split it
with CLIP's pre-tokenising regex, map each piece's UTF-8 bytes to byte symbols, mark the last
symbol with `</w>`, then repeatedly merge the adjacent pair with the lowest merge rank.
"""

from __future__ import annotations

import gzip
import html
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import regex
import torch

from cpcl.utils.errors import CpclError

logger = logging.getLogger(__name__)

DEFAULT_BPE_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
DEFAULT_CONTEXT_LENGTH = 77  # CLIP's text context: SOT + up to 75 BPE tokens + EOT
NUM_MERGES = 49152 - 256 - 2  # merges OpenAI kept from the file (48,894)
SOT_TEXT = "<|startoftext|>"  # start-of-text special token
EOT_TEXT = "<|endoftext|>"  # end-of-text special token
WORD_END = "</w>"  # suffix marking the last symbol of a word
PIECE_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"  # after specials


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte 0..255 to a printable unicode character, reversibly.

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the remaining
    bytes, in increasing order, map to chr(256), chr(257), ... Insertion order is vocab order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


def clean_text(text: str) -> str:
    """CLIP's text cleaning: fix mojibake, unescape HTML twice, collapse whitespace, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return regex.sub(r"\s+", " ", text).strip().lower()


def load_merges(path: Path) -> list[tuple[str, str]]:
    """Read the first `NUM_MERGES` merge pairs of a gzipped merges file (header line skipped)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")[1:NUM_MERGES + 1]
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise CpclError(f"cannot read BPE merges file {path}: {err}") from err
    pairs = [line.split() for line in lines]
    if len(pairs) < NUM_MERGES or any(len(pair) != 2 for pair in pairs):
        raise CpclError(f"BPE merges file {path} is corrupt: expected {NUM_MERGES} lines "
                        f"of two symbols after the header")
    return [(first, second) for first, second in pairs]


class ClipTokenizer:
    """OpenAI CLIP's BPE tokenizer.

    `encode` gives BPE ids without special tokens; `tokenize` gives the model input
    `[N, context_length]` (SOT, ids, EOT, zero padding).
    """

    def __init__(self, bpe_path: Path | None = None) -> None:
        path = Path(bpe_path) if bpe_path is not None else DEFAULT_BPE_PATH
        if not path.is_file():
            raise CpclError(f"BPE merges file not found: {path}")
        merges = load_merges(path)
        self._byte_encoder = bytes_to_unicode()
        self._byte_decoder = {char: b for b, char in self._byte_encoder.items()}
        symbols = list(self._byte_encoder.values())
        vocab = [*symbols, *(s + WORD_END for s in symbols), *(a + b for a, b in merges),
                 SOT_TEXT, EOT_TEXT]
        self._encoder = {token: i for i, token in enumerate(vocab)}
        self._decoder = dict(enumerate(vocab))
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._special = {token: self._encoder[token] for token in (SOT_TEXT, EOT_TEXT)}
        specials = "|".join(regex.escape(token) for token in self._special)
        self._pattern = regex.compile(f"{specials}|{PIECE_PATTERN}", regex.IGNORECASE)
        self._cache: dict[str, tuple[int, ...]] = {}
        self.vocab_size = len(vocab)
        self.sot_token_id = self._special[SOT_TEXT]
        self.eot_token_id = self._special[EOT_TEXT]
        logger.debug("loaded CLIP BPE: %d tokens from %s", self.vocab_size, path)

    def tables(self) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """(vocabulary: token -> id, merges in rank order): what other BPE implementations are built from."""
        return dict(self._encoder), sorted(self._ranks, key=self._ranks.__getitem__)

    def _bpe(self, word: str) -> list[str]:
        """Greedily merge the lowest-ranked adjacent pair of `word`'s symbols until none merges."""
        parts = [*word[:-1], word[-1] + WORD_END]
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda pair: self._ranks.get(pair, NUM_MERGES))
            if best not in self._ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _piece_ids(self, piece: str) -> tuple[int, ...]:
        """Ids of one pre-tokenised piece (a special token, a word, a digit or punctuation run)."""
        if piece in self._special:
            return (self._special[piece],)
        ids = self._cache.get(piece)
        if ids is None:
            word = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids = tuple(self._encoder[part] for part in self._bpe(word))
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned `text`, without SOT/EOT."""
        ids: list[int] = []
        for piece in self._pattern.findall(clean_text(text)):
            ids.extend(self._piece_ids(piece))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of `ids`, as OpenAI decodes it: each `</w>` becomes a space (so a trailing one)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        symbols = "".join(self._decoder[int(i)] for i in ids)
        data = bytearray(self._byte_decoder[char] for char in symbols)
        return data.decode("utf-8", errors="replace").replace(WORD_END, " ")

    def token_ids(self, texts: str | Sequence[str],
                  context_length: int | None = None) -> list[list[int]]:
        """Unpadded ids `SOT ... EOT` per text; longer than `context_length` (when given):
        truncated to it, last id set to EOT."""
        if context_length is not None and context_length < 2:
            raise CpclError(f"context_length must be at least 2 (SOT and EOT), got {context_length}")
        texts = [texts] if isinstance(texts, str) else texts
        rows = [[self.sot_token_id, *self.encode(text), self.eot_token_id] for text in texts]
        if context_length is not None:
            rows = [row if len(row) <= context_length
                    else [*row[:context_length - 1], self.eot_token_id] for row in rows]
        return rows

    def tokenize(self, texts: str | Sequence[str],
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.LongTensor:
        """Model input ids: [N, context_length] long, SOT + ids + EOT then zeros; too-long texts
        are truncated to `context_length` with EOT as the last id."""
        rows = self.token_ids(texts, context_length)
        out = torch.zeros(len(rows), context_length, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out  # type: ignore[return-value]

    __call__ = tokenize


@lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The tokenizer built from the shipped merges file, loaded once on first use."""
    return ClipTokenizer()
