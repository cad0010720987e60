"""Checks on text a person wrote: a query, a caption."""

from __future__ import annotations

import unicodedata


def blank(text: str) -> bool:
    """Whether `text` holds nothing to read: only white space, control and format characters (Unicode categories
    Z and C), which the tokenizer drops or reads as nothing."""
    return all(unicodedata.category(char)[0] in "ZC" for char in text)
