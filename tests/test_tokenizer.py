"""CLIP BPE tokenizer: pinned ids, OpenAI reference outputs, padding/truncation, cleaning, CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from cpcl.model.tokenizer import ClipTokenizer, clean_text, default_tokenizer
from cpcl.utils.errors import CpclError

# Ids of OpenAI's SimpleTokenizer (bpe_simple_vocab_16e6) for a varied sentence list.
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "tokenizer_reference.json")
                       .read_text(encoding="utf-8"))["cases"]
SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return default_tokenizer()


def test_vocab_and_special_ids(tok: ClipTokenizer) -> None:
    assert tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (SOT, EOT)


@pytest.mark.parametrize("text, ids", [("a diagram", [SOT, 320, 22697, EOT]),
                                       ("a dog", [SOT, 320, 1929, EOT])])
def test_pinned_ids(tok: ClipTokenizer, text: str, ids: list[int]) -> None:
    assert tok.token_ids(text) == [ids]
    assert tok.tokenize(text)[0, :len(ids)].tolist() == ids


@pytest.mark.parametrize("case", REFERENCE, ids=lambda case: case["text"][:30])
def test_matches_openai_reference(tok: ClipTokenizer, case: dict) -> None:
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["decoded"]


def test_reference_covers_variety() -> None:
    assert len(REFERENCE) >= 40
    assert max(len(case["ids"]) for case in REFERENCE) > 75  # one text needs truncation


def test_tokenize_pads_with_zeros(tok: ClipTokenizer) -> None:
    out = tok.tokenize(["a dog", "a woman in a red coat", ""], context_length=16)
    assert out.shape == (3, 16) and out.dtype == torch.long
    for row, text in zip(out.tolist(), ["a dog", "a woman in a red coat", ""]):
        ids = [SOT, *tok.encode(text), EOT]
        assert row == ids + [0] * (16 - len(ids))
    assert tok.tokenize("a dog").shape == (1, 77)
    assert torch.equal(tok("a dog"), tok.tokenize(["a dog"]))


def test_tokenize_truncates_long_text_with_eot_last(tok: ClipTokenizer) -> None:
    long_case = max(REFERENCE, key=lambda case: len(case["ids"]))
    out = tok.tokenize([long_case["text"]])
    assert out.shape == (1, 77)
    assert out[0].tolist() == [SOT, *long_case["ids"][:75], EOT]
    assert tok.token_ids(long_case["text"], 5) == [[SOT, *long_case["ids"][:3], EOT]]
    assert tok.tokenize("a dog", context_length=2).tolist() == [[SOT, EOT]]


def test_context_length_below_two_raises(tok: ClipTokenizer) -> None:
    with pytest.raises(CpclError, match="context_length"):
        tok.tokenize("a dog", context_length=1)


def test_cleaning_entities_whitespace_case(tok: ClipTokenizer) -> None:
    assert clean_text("  A  Man\t\n&amp;amp;   a &lt;Dog&gt;  ") == "a man & a <dog>"
    assert tok.encode("  A\tDOG \n") == tok.encode("a dog")
    assert tok.encode("black &amp; white") == tok.encode("black & white")
    assert tok.encode("black &amp;amp; white") == tok.encode("black & white")


def test_special_token_text_maps_to_its_id(tok: ClipTokenizer) -> None:
    assert tok.encode("a dog<|endoftext|>") == [320, 1929, EOT]


@pytest.mark.parametrize("text", ["a man in a black jacket carrying a bag",
                                  "The Woman Wears Blue Jeans and White Sneakers",
                                  "a person walks with a dog on the street"])
def test_decode_round_trips_plain_ascii(tok: ClipTokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)).rstrip() == clean_text(text)
    assert tok.decode(torch.tensor(tok.encode(text))).rstrip() == clean_text(text)


def test_bpe_cache_gives_same_ids(tok: ClipTokenizer) -> None:
    first = tok.encode("antidisestablishmentarianism")
    assert tok.encode("antidisestablishmentarianism") == first


def test_missing_merges_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CpclError, match="not found"):
        ClipTokenizer(tmp_path / "missing.txt.gz")


def test_corrupt_merges_file_raises(tmp_path: Path) -> None:
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_text("#version: 0.2\ni n\n")
    with pytest.raises(CpclError, match="cannot read"):
        ClipTokenizer(not_gzip)
    truncated = tmp_path / "short.txt.gz"
    with gzip.open(truncated, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(CpclError, match="corrupt"):
        ClipTokenizer(truncated)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    from cpcl.cli import main  # imported here so the tokenizer tests run without the whole CLI

    assert main(["tokenize", "--json", "a dog", "a diagram"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"text": "a dog", "ids": [SOT, 320, 1929, EOT]},
        {"text": "a diagram", "ids": [SOT, 320, 22697, EOT]},
    ]


def test_cli_plain_and_context_length(capsys: pytest.CaptureFixture[str]) -> None:
    from cpcl.cli import main

    assert main(["tokenize", "a dog", "--context-length", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{SOT} 320 {EOT}"]
    assert main(["tokenize", "a dog", "--context-length", "1"]) == 2
    assert "context_length" in capsys.readouterr().err
