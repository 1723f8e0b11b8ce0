"""The paper's FFN term, computed here only to compare it with huref's under the rotation attack.

HuRef's published code forms the FFN term of a gated (SwiGLU) layer from the elementwise product of
the gate and up weight matrices:  X·(Wg ⊙ Wu)ᵀ·Wdᵀ·X_oᵀ  (HF orientation, W is [out, in]).
huref multiplies the two projections of the rows instead:  (X·Wgᵀ ⊙ X·Wuᵀ)·Wdᵀ·X_oᵀ, which a
rotation of the residual stream leaves unchanged; the product of the weights does not survive it,
since (Wg·Rᵀ) ⊙ (Wu·Rᵀ) ≠ (Wg ⊙ Wu)·Rᵀ. Rows X are prepared exactly as huref prepares them.
"""

import torch

from huref.invariants import Terms
from huref.layers import apply_norm, embedding_rows, layer_weights
from huref.tokens import select_tokens


def with_paper_ffn(model, terms: Terms) -> Terms:
    """A copy of `terms` (huref's, for `model`, a llama) whose ffn term is replaced by the paper's form."""
    ids, keys = select_tokens(model.vocab, model.embedding_shape()[0], len(terms.tokens))
    assert keys == terms.tokens, "token selection differs from the cached terms"
    values = terms.values.clone()
    with torch.no_grad():
        x = embedding_rows(model, ids)
        for row, i in enumerate(terms.layers):
            layer = layer_weights(model, i)
            ffn = layer.ffns[0]
            gate_times_up = ffn.gate.rows(0, ffn.gate.out_dim) * ffn.up.rows(0, ffn.up.out_dim)  # [inner, d]
            down = ffn.down.rows(0, ffn.down.out_dim)                                           # [d, inner]
            values[row, 2] = (apply_norm(layer.ffn_norm, x) @ gate_times_up.T @ down.T @ x.T).float()
    return Terms(values, terms.layers, terms.tokens, terms.meta)

