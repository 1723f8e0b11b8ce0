"""Scale and shift rewrites: the whole residual stream scaled (the norm epsilon with it), writes scaled
ahead of the norms that divide the scale out, embedding rows scaled or shifted where a norm or the position
rows cancel it, LayerNorm's blind directions (the all-ones vector, the reader's null direction) used."""

import torch

from huref_lab.attacks.canonical import (RESIDUAL_FACTS, edit_checkpoint, mixer_writers, norm_gain, reader_groups,
                                         set_gain, untie, writers)
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.draws import in_float64, random_scales
from huref_lab.attacks.rule import rule


# needs the norm epsilon in config.json, residual reads only through norms, an embedding norm (if any) with a
# gain to scale (a bare one would divide the scale out of the stream's start), and no hybrid mixer with norms of
# its own on that epsilon (whose inputs do not scale)
@rule(lambda lay: lay.eps_key is not None and lay.pre_norms and not lay.residual_post_norm
      and (not lay.arch.embed_norm or lay.emb_norm is not None)
      and not (lay.arch.mixer and lay.arch.mixer.inner_norms) and not lay.arch.norm_residual,
      reads=RESIDUAL_FACTS + ("qk norms", "norm epsilon"))
def embedding_scale(checkpoint: Checkpoint, generator: torch.Generator, factor: float = 3.7) -> Checkpoint:
    """Scale the whole residual stream by `factor`: embeddings and every residual write times c, norm eps times c².

    Pre-norms see c·x with eps·c², so their output is unchanged; post-norm gains (the writes of gemma2/3)
    are scaled instead of the matrices before them, and QK-norm inputs are scaled by c to match their eps.
    """
    def edit(canon, result):
        lay = canon.layout
        times = in_float64(lambda w: w * factor)
        for name in (lay.embed, *lay.pos_embeds):
            canon.update(None, name, times)
        if lay.emb_norm:
            canon.update(None, lay.emb_norm, times)
            canon.update(None, lay.emb_norm, times, "bias")
        for i in range(lay.n_layers):
            for role in writers(canon, i):   # with a post-norm this keeps its input in step with its eps
                canon.update(i, role, times)
                canon.update(i, role, times, "bias")
            for post in ("attn_post_norm", "ffn_post_norm"):
                if canon.get(i, post) is not None:
                    gain, _ = norm_gain(canon, i, post)
                    set_gain(canon, i, post, gain * factor)
            if i in lay.qk_norm_layers:
                for role in ("q", "k"):
                    canon.update(i, role, times)
                    canon.update(i, role, times, "bias")
        if lay.tied and lay.head_reader is None:
            untie(canon, result)
            canon.update(None, lay.head, in_float64(lambda w: w / factor))
        result.config[lay.eps_key] = result.config[lay.eps_key] * factor ** 2
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: lay.post_norms and not lay.residual_post_norm,
      reads=("post norms", "output storage", "ffn storage", "ffn kinds", "router", "reader biases", "token mixer",
             "layer kinds"))
def post_norm_rescale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Post-norm models (gemma2/3, olmo2): scale the attention output and FFN down projections by factors
    >= 1 per layer; the norm on each write divides them out (its epsilon matters even less afterwards)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for post, roles in (("attn_post_norm", mixer_writers(canon, i)),
                                ("ffn_post_norm", [unit[2] for unit in canon.ffn_units(i)])):
                if canon.name(i, post) is None:   # no norm on this write (olmo_hybrid's delta-net layers)
                    continue
                c = 1 + float(random_scales(1, generator, signed=False, spread=1.5)[0])
                for role in roles:
                    canon.update(i, role, in_float64(lambda w: w * c))
                    canon.update(i, role, in_float64(lambda b: b * c), "bias")
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: lay.layer_norm and lay.pre_norms and not lay.residual_post_norm
      and (lay.reader_bias or lay.bare_norms), reads=RESIDUAL_FACTS)
def layernorm_null_direction(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """LayerNorm pre-norm models: add u·(1/g)ᵀ to each matrix reading a LayerNorm (gain g, bias b).

    The normalised input z is centred, so (u·(1/g)ᵀ)(g∘z + b) = u·Σ(b/g): a constant, moved into the
    reader's bias. Readers without a bias are left alone (unless the norm has no bias at all).
    """
    def edit(canon, result):
        lay = canon.layout

        def shift(i, norm_role, readers):
            gain, bias = norm_gain(canon, i, norm_role)
            gain = torch.ones(lay.hidden, dtype=torch.float64) if gain is None else gain
            offset = 0.0 if bias is None else float((bias.double() / gain).sum())
            for r in readers:
                w = canon.get(i, r)
                if w is None or (canon.get(i, r, "bias") is None and offset != 0.0):
                    continue
                u = float(w.std()) * torch.randn(w.shape[0], generator=generator, dtype=torch.float64)
                canon.put(i, r, (w.double() + u[:, None] / gain).float())
                canon.update(i, r, in_float64(lambda b: b - u * offset), "bias")

        for i in range(lay.n_layers):
            for norm_role, readers in reader_groups(canon, i):
                shift(i, norm_role, readers)
        shift(None, lay.final_norm, [lay.head])
    return edit_checkpoint(checkpoint, edit)


# the embedding norm must see the token embedding alone (bert adds position embeddings first); where the norms'
# outputs are the residual path (minimax), layer 0's input norm is the embedding's only reader
@rule(lambda lay: (lay.emb_norm is not None or lay.arch.norm_residual) and not lay.pos_embeds,
      reads=("embedding norm", "norm residual", "tied head", "head bias"))
def embedding_row_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Models whose token embedding goes straight into a norm and nowhere else (bloom's embedding LayerNorm,
    minimax's first input norm): scale each token's row by its own factor >= 1; the norm divides it out (its epsilon matters even less afterwards). The head is untied."""
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            untie(canon, result)
        name = canon.name(None, lay.embed)
        factors = 1 + random_scales(canon.t[name].shape[0], generator, signed=False, spread=1.5)
        canon.t[name] = (canon.t[name].double() * factors[:, None]).float()
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: bool(lay.pos_embeds), reads=("position embeddings", "tied head", "head bias"))
def position_embedding_shift(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Learned absolute positions (gpt2, gpt_neo, opt, bert): add one vector v to every token embedding row
    and subtract it from every row of the other embedding each input adds (positions). The sum entering
    the model is unchanged; the head is untied from the embedding."""
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            untie(canon, result)
        embed = canon.name(None, lay.embed)
        v = 2 * float(canon.t[embed].std()) * torch.randn(lay.hidden, generator=generator)
        canon.t[embed] = canon.t[embed] + v
        canon.update(None, lay.pos_embeds[0], lambda w: w - v)
    return edit_checkpoint(checkpoint, edit)


# the first block must read the embedding through a LayerNorm (openai-gpt's reads it raw)
@rule(lambda lay: lay.layer_norm and (lay.pre_norms or lay.emb_norm is not None), reads=RESIDUAL_FACTS)
def mean_shift(checkpoint: Checkpoint, generator: torch.Generator, magnitude: float = 1.0) -> Checkpoint:
    """LayerNorm models: add multiples of the all-ones vector to every embedding row and every residual write.

    LayerNorm removes the mean, so nothing downstream sees the shift; the head is untied from the embedding.
    The shifts are about `magnitude` times the embedding's standard deviation.
    """
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            untie(canon, result)
        spread = magnitude * float(canon.get(None, lay.embed).std())

        def shift_rows(w):   # w [*, H]: each row plus s·1
            return w + spread * torch.randn(w.shape[0], 1, generator=generator)

        def shift_writer(w):  # w [H, *]: output plus (v·input)·1
            return w + spread * torch.randn(1, w.shape[1], generator=generator)

        def shift_bias(b):
            return b + spread * torch.randn(1, generator=generator)

        for name in (lay.embed, *lay.pos_embeds):
            canon.update(None, name, shift_rows)
        for i in range(lay.n_layers):
            for role in writers(canon, i):
                canon.update(i, role, shift_writer)
                canon.update(i, role, shift_bias, "bias")
    return edit_checkpoint(checkpoint, edit)
