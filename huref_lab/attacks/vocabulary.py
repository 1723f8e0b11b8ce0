"""Vocabulary rewrites: appending tokens, reordering token ids, renaming token strings (with the tokenizer
kept in step, so text still maps to the same logits)."""

import copy

import torch

from huref.errors import HurefError
from huref_lab.attacks.canonical import bias_name, edit_checkpoint
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.draws import random_permutation
from huref_lab.attacks.rule import rule


def vocabulary(tokenizer: dict) -> dict:
    """token string -> id of a parsed tokenizer.json (model vocabulary plus added tokens)."""
    vocab = tokenizer["model"]["vocab"]
    ids = {piece: i for i, (piece, _) in enumerate(vocab)} if isinstance(vocab, list) else dict(vocab)
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids


def _vocab_rows(canon):
    """Names of the tensors indexed by token id: embedding, head (if untied), head biases."""
    lay = canon.layout
    names = [canon.name(None, lay.embed), canon.name(None, lay.head)]
    names += [bias_name(lay.head), lay.head_bias]
    return [n for n in names if n in canon.t]


@rule(lambda lay: True, reads=("tied head", "head bias"))
def append_vocabulary(checkpoint: Checkpoint, generator: torch.Generator, n_new: int = 40) -> Checkpoint:
    """Append `n_new` tokens: new random rows in the embedding and head, new entries in the tokenizer."""
    def edit(canon, result):
        for name in _vocab_rows(canon):
            old = canon.t[name]
            scale = float(old.std())
            canon.t[name] = torch.cat([old, scale * torch.randn(n_new, *old.shape[1:], generator=generator)])
        vocab_size = result.config["vocab_size"]
        result.config["vocab_size"] = vocab_size + n_new
        if result.tokenizer is not None:
            taken = vocabulary(result.tokenizer)
            new = [f"new{j}tok" for j in range(n_new)]
            assert not taken.keys() & set(new)
            result.tokenizer.setdefault("added_tokens", []).extend(
                {"id": vocab_size + j, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": True, "special": False} for j, s in enumerate(new))
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: True, reads=("tied head", "head bias"))
def reorder_vocabulary(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the token ids: embedding/head rows and the tokenizer's ids (and the config's special ids) together."""
    def edit(canon, result):
        n = canon.t[canon.name(None, canon.layout.embed)].shape[0]
        order = random_permutation(n, generator)                       # new id j holds old id order[j]
        new_of_old = torch.empty_like(order)
        new_of_old[order] = torch.arange(n)
        for name in _vocab_rows(canon):
            canon.t[name] = canon.t[name][order]
        def remap(value):   # a token id, or a list of them
            if isinstance(value, list):
                return [remap(v) for v in value]
            return int(new_of_old[value]) if isinstance(value, int) and 0 <= value < n else value

        for settings in (result.config, result.extras.get("generation_config.json", {})):
            for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "decoder_start_token_id"):
                if key in settings:
                    settings[key] = remap(settings[key])
        tokenizer_config = result.extras.get("tokenizer_config.json", {})
        if "added_tokens_decoder" in tokenizer_config:
            tokenizer_config["added_tokens_decoder"] = {
                str(remap(int(i))): token for i, token in tokenizer_config["added_tokens_decoder"].items()}
        tok = result.tokenizer
        if tok is None:
            return
        vocab = tok["model"]["vocab"]
        if isinstance(vocab, list):
            tok["model"]["vocab"] = [vocab[int(o)] for o in order]
        else:
            tok["model"]["vocab"] = {s: int(new_of_old[i]) for s, i in vocab.items()}
        for added in tok.get("added_tokens", []):
            added["id"] = int(new_of_old[added["id"]])
        for special in ((tok.get("post_processor") or {}).get("special_tokens") or {}).values():
            special["ids"] = [int(new_of_old[i]) for i in special["ids"]]
    return edit_checkpoint(checkpoint, edit)


def _walk(node):
    """Every dict inside a parsed tokenizer.json component (Sequences included)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def rename_token_strings(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Rename every vocabulary string through a random bijection of the letters a-z onto other characters,
    with a normaliser that applies it to the input text and a decoder step that undoes it on the output.

    Text still maps to the same ids and ids decode to the same text; the weights are untouched. Not for
    byte-level tokenizers (their pre-tokenizer would see the replaced characters as other bytes) or
    byte-fallback ones. Not in ATTACKS: whether it applies depends on the tokenizer, not the architecture.
    """
    tok = copy.deepcopy(checkpoint.tokenizer)
    if tok is None:
        raise HurefError("rename_token_strings needs a tokenizer.json")
    if any(node.get("type") == "ByteLevel" for node in _walk(tok.get("pre_tokenizer"))) or tok["model"].get("byte_fallback"):
        raise HurefError("rename_token_strings does not apply to byte-level or byte-fallback tokenizers")
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = [chr(c) for c in range(0x100, 0x180)]   # Latin Extended-A
    picked = [pool[int(j)] for j in random_permutation(len(pool), generator)[:len(letters)]]
    rename = str.maketrans(letters, "".join(picked))
    model = tok["model"]
    specials = {t["content"] for t in tok.get("added_tokens", [])} | {model.get("unk_token")}

    def renamed(piece):
        return piece if piece in specials else piece.translate(rename)

    if isinstance(model["vocab"], list):
        model["vocab"] = [[renamed(piece), score] for piece, score in model["vocab"]]
    else:
        model["vocab"] = {renamed(piece): i for piece, i in model["vocab"].items()}
    if "merges" in model:
        model["merges"] = [" ".join(map(renamed, m.split(" "))) if isinstance(m, str) else [renamed(x) for x in m]
                           for m in model["merges"]]
    forward = [{"type": "Replace", "pattern": {"String": a}, "content": b} for a, b in zip(letters, picked)]
    backward = [{"type": "Replace", "pattern": {"String": b}, "content": a} for a, b in zip(letters, picked)]
    tok["normalizer"] = {"type": "Sequence", "normalizers": ([tok["normalizer"]] if tok.get("normalizer") else []) + forward}
    # no decoder joins tokens with spaces; WordPiece's decoder does the same for pieces without its prefix
    joiner = tok.get("decoder") or {"type": "WordPiece", "prefix": "\u0000##", "cleanup": False}
    tok["decoder"] = {"type": "Sequence", "decoders": backward + [joiner]}
    return Checkpoint(dict(checkpoint.tensors), copy.deepcopy(checkpoint.config), tok, copy.deepcopy(checkpoint.extras))
