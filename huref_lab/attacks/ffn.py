"""FFN rewrites: reordering and rescaling each FFN's hidden neurons (each expert's too), reordering the
experts with their router, shifting the router's logits."""

import torch

from huref_lab.attacks.canonical import edit_checkpoint
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.draws import in_float64, random_permutation, random_scales
from huref_lab.attacks.rule import rule


@rule(lambda lay: True, reads=("ffn storage", "ffn kinds", "router", "reader biases", "layer kinds"))
def ffn_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the hidden neurons of every FFN (each expert and the shared expert separately)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for gate, up, down in canon.ffn_units(i):
                order = random_permutation(canon.get(i, up).shape[0], generator)
                for role in (gate, up):
                    if role is not None:
                        canon.update(i, role, lambda w: w[order])
                        canon.update(i, role, lambda b: b[order], "bias")
                canon.update(i, down, lambda w: w[:, order])
    return edit_checkpoint(checkpoint, edit)


# gpt-oss clamps up and adds 1 to it: the FFN sees up's scale
@rule(lambda lay: (lay.gated and not lay.arch.ffn_clamped) or lay.relu,
      reads=("ffn storage", "ffn kinds", "ffn activation", "router", "reader biases", "layer kinds"))
def ffn_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Scale each FFN neuron's input by c and its output by 1/c.

    Gated FFNs: the up projection, any sign (act(gate)·(c·up) is linear in up). Plain ReLU FFNs: the input
    projection with c > 0 (relu(c·x) = c·relu(x)).
    """
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for gate, up, down in canon.ffn_units(i):
                scales = random_scales(canon.get(i, up).shape[0], generator, signed=gate is not None, spread=1.5)
                canon.update(i, up, in_float64(lambda w: w * scales[:, None]))
                canon.update(i, up, in_float64(lambda b: b * scales), "bias")
                canon.update(i, down, in_float64(lambda w: w / scales))
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: lay.n_experts > 0,
      reads=("attention", "ffn storage", "ffn kinds", "router", "reader biases", "layer kinds"))
def expert_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Reorder the experts of every MoE layer together with the router's rows (and score bias). Where the
    router chooses groups of consecutive experts first (DeepSeek's n_group), the groups are reordered and
    the experts within each group, so every group keeps its members. Attention experts (jetmoe) are
    reordered with their own router in the same way."""
    def edit(canon, result):
        lay = canon.layout
        for i in range(lay.n_layers):
            for router, expert, subs, groups in (("router", "expert", ("gate", "up", "down"), lay.expert_groups),
                                                 ("attn_router", "attn_expert", ("q", "o"), 1)):
                if canon.get(i, router) is None:
                    continue
                size = lay.dims.n_experts // groups
                order = torch.cat([g * size + random_permutation(size, generator)
                                   for g in random_permutation(groups, generator)])
                subs = [sub for sub in subs if canon.get(i, f"{expert}0.{sub}") is not None]
                for suffix in ("weight", "bias"):   # biases beside 3-D experts (gpt-oss) move with them
                    old = {(e, sub): canon.get(i, f"{expert}{e}.{sub}", suffix) for e in range(len(order)) for sub in subs}
                    for e in range(len(order)):
                        for sub in subs:
                            if old[(e, sub)] is not None:
                                canon.put(i, f"{expert}{e}.{sub}", old[(int(order[e]), sub)], suffix)
                canon.update(i, router, lambda w: w[order])
                canon.update(i, router, lambda b: b[order], "bias")
                if router == "router":   # [experts] or [1, experts] (ernie4_5_moe)
                    canon.update(i, "router_bias", lambda b: b[..., order])
    return edit_checkpoint(checkpoint, edit)


# a shift added to every expert's logit: a softmax cancels it, sigmoid scores and sparsemixer's masks do not
@rule(lambda lay: lay.n_experts > 0 and lay.arch.router_scores == "softmax",
      reads=("attention", "ffn storage", "ffn kinds", "router", "layer kinds"))
def router_shift(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MoE: add one random vector to every row of each router (the attention experts' too); the softmax
    over experts cancels it."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for role in ("router", "attn_router"):
                router = canon.get(i, role)
                if router is None:
                    continue
                delta = float(router.std()) * 3 * torch.randn(router.shape[1], generator=generator)
                canon.put(i, role, router + delta)
    return edit_checkpoint(checkpoint, edit)
