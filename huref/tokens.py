"""Which tokens' embedding rows probe the weights, chosen the same way for every model.

Each candidate token gets a key: its string when a vocabulary is known ("s:" + the string as
the tokenizer's decoder writes it (its Replace steps, `huref.sources.load_vocab`), with the
SentencePiece '▁' and byte-level 'Ġ' space markers written as a plain space), else its id
("id:" + id). Renaming every piece through a mapping that the normalizer applies to the text
and the decoder undoes therefore keeps the keys. Candidates are ranked by the SHA-256 of their
key and the first n are taken, in that order. The choice does not depend on token ids:
reordering the vocabulary (with its tokenizer) selects the same tokens in the same order, and
tokens appended to a vocabulary displace a selected token only where their hash ranks lower, so
two relatives share almost all keys. Comparisons align two term sets on the keys they share (`huref.similarity`). Special and
control tokens are never selected; they carry little of what pretraining learned.
"""

from __future__ import annotations

import hashlib


def token_key(token: str) -> str:
    """The selection key of a token string."""
    return "s:" + token.replace("\u2581", " ").replace("\u0120", " ")


def select_tokens(vocab: list[str | None] | None, n_rows: int, n: int) -> tuple[list[int], list[str]]:
    """Pick up to `n` token ids among the first `n_rows` embedding rows; return (ids, keys).

    `vocab[id]` is the token string, or None for special tokens; `vocab=None` selects by id.
    Keys are unique (of tokens whose key repeats, the one with the smallest raw string stands for it).
    """
    candidates: dict[str, tuple[str, int]] = {}
    for token_id in range(n_rows):
        if vocab is None:
            key, raw = f"id:{token_id}", ""
        elif token_id < len(vocab) and vocab[token_id] is not None:
            raw = vocab[token_id]
            key = token_key(raw)
        else:
            continue
        # tokens whose keys collide ("▁w" and "Ġw"): the smallest raw string stands for the key,
        # a choice that does not depend on ids (raw strings are unique within a vocabulary)
        if key not in candidates or raw < candidates[key][0]:
            candidates[key] = (raw, token_id)
    ranked = sorted(candidates, key=lambda k: hashlib.sha256(k.encode()).digest())[:n]
    return [candidates[k][1] for k in ranked], ranked
