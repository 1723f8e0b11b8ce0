"""The canonical (unfused) view of a checkpoint that every attack edits, and the roles it is addressed by.

Orientation: every matrix is handled as HF nn.Linear stores it, [out, in]; residual vectors are columns.
Fused tensors (gpt2 c_attn, gpt_neox/bloom per-head query_key_value, falcon's multi-query and grouped
layouts, phi3 qkv_proj/gate_up_proj, 3-D experts, qwen3_next's query + output-gate rows) are split into
virtual parts named "<tensor>#q" etc. by the row maps of huref.layers.LAYOUTS, and joined again after an
attack, their biases with them; gpt2's Conv1D weights and gpt-oss's [expert, in, out] experts are
transposed to [out, in] (per expert) and back.
"""

import copy
import math

import torch

from huref.architectures import FFN, PLUS_ONE_KINDS, Proj
from huref.errors import HurefError
from huref.layers import LAYOUTS
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.layout import Layout, layout_of

def bias_name(weight_name: str) -> str:
    """The bias beside a weight: "<module>.bias" for "<module>.weight", "<name>_bias" for a bare
    parameter (gpt-oss's 3-D experts: gate_up_proj_bias [experts, 2 * inner])."""
    return weight_name[: -len("weight")] + "bias" if weight_name.endswith(".weight") else weight_name + "_bias"


def _rows(index):
    """A row index of huref.layers.LAYOUTS (slice or numpy array) usable on a torch tensor."""
    return index if isinstance(index, slice) else torch.as_tensor(index)


# the norms of a layer, by ArchSpec field (these names are also the roles)
NORM_ROLES = ("attn_norm", "ffn_norm", "attn_post_norm", "ffn_post_norm", "residual_norm", "q_norm", "k_norm")


class Canon:
    """A checkpoint's tensors with every fused tensor split into its logical matrices ("<name>#<part>")
    and Conv1D weights made [out, in]; `get(i, role)`, `put` and `update` address them by role.

    Roles of layer i: q, k, v, o (with attn_gate, the output gate's query rows, and sinks, the per-head
    sink logits, where the model has them; with attention experts attn_expert<e>.q and .o for q and o,
    and attn_router; write_bias<j>, a bias added to the residual stream after a block's write, where the
    model has them), or, in a hybrid model's mixer layer, mixer_in<j> and
    mixer_out<j>; the norms of NORM_ROLES that it has; the FFN's gate, up, down (a dense
    layer) or expert<e>.gate/up/down with router, and shared.gate/up/down with shared_router (MoE).
    i=None: `role` is a tensor's full name. `join()` gives the tensors back in their saved form.
    """

    def __init__(self, tensors: dict, layout: Layout):
        self.t = dict(tensors)
        self.layout = layout
        self.kinds = {}        # norm scale name -> norm kind
        self.fused = {}        # stored name -> [(part tag, layout, part, expert)]
        self.transposed = set()
        self.flat = {}         # transposed expert tensors stored flat [experts * in, out] (dbrx) -> saved shape
        arch = layout.arch
        if arch.embed_proj and layout.full_name(arch.embed_proj) in self.t:
            raise HurefError("attacks: a model with an input projection of its embeddings is not supported")
        for name, norms in ((layout.emb_norm, arch.embed_norm), (layout.final_norm, arch.final_norm)):
            if name:
                self.kinds[name] = norms[0].kind
        self.roles, self.units = [], []
        for i in range(layout.n_layers):
            roles, units = self._layer(i)
            self.roles.append(roles)
            self.units.append(units)
        self._split()

    def _layer(self, i):
        """(role -> (weight name, bias name), FFN units [(gate role or None, up role, down role)]) of layer i."""
        lay, arch = self.layout, self.layout.arch
        prefix = lay.full_name(arch.layer.format(i=i))
        roles = {}

        def add(role, proj: Proj, e=0, expert_layout=False):
            stored = prefix + proj.name.format(e=e)
            bias = bias_name(stored)
            if proj.transposed:
                self.transposed.add(stored)
                if proj.layout.startswith("experts") and self.t[stored].dim() == 2:
                    self.flat[stored] = self.t[stored].shape
            if proj.layout == "plain":
                roles[role] = (stored, bias)
                return
            tag = f"#{proj.part}{e if expert_layout else ''}"
            parts = self.fused.setdefault(stored, [])
            if (tag, proj.layout, proj.part, e) not in parts:
                parts.append((tag, proj.layout, proj.part, e))
            roles[role] = (stored + tag, bias and bias + tag)

        if arch.mixer is not None and (i not in lay.attention_layers or arch.mixer.parallel):
            for kind, projs in (("in", arch.mixer.readers), ("out", arch.mixer.writers)):   # mixer_in<j>, mixer_out<j>
                for j, proj in enumerate(projs):
                    add(f"mixer_{kind}{j}", proj)
        attention = i in lay.attention_layers   # False: a hybrid model's mixer layer
        for j, name in enumerate(arch.write_biases):
            roles[f"write_bias{j}"] = (prefix + name, None)
        if attention and arch.attn_experts is not None:   # attn_expert<e>.q / .o, attn_router, k, v
            for e in range(lay.dims.n_experts):
                add(f"attn_expert{e}.q", arch.attn_experts.q, e, True)
                add(f"attn_expert{e}.o", arch.attn_experts.o, e, True)
            roles["attn_router"] = (prefix + arch.attn_experts.router, bias_name(prefix + arch.attn_experts.router))
            for role in "kv":
                add(role, getattr(arch, role))
        elif attention and arch.mla is None:
            for role in "qkvo":
                add(role, getattr(arch, role))
            if arch.attn_gate is not None:
                add("attn_gate", arch.attn_gate)
            if arch.sinks is not None:
                roles["sinks"] = (prefix + arch.sinks, None)
        elif attention:   # roles q_a, q_a_norm, q_b (or q), kv_a, kv_a_norm, kv_b, o
            mla = arch.mla
            latent_q = prefix + mla.q_a.name in self.t
            for role in (("q_a", "q_b") if latent_q else ("q",)) + ("kv_a", "kv_b"):
                add(role, getattr(mla, role))
            add("o", arch.o)
            if mla.indexer_q is not None and latent_q:   # DeepSeek sparse attention's indexer
                add("indexer_q", mla.indexer_q)
            for j, proj in enumerate(mla.indexer_readers):
                add(f"indexer_in{j}", proj)
            for role in (("q_a_norm",) if latent_q else ()) + ("kv_a_norm",):
                name = prefix + getattr(mla, role).name
                roles[role] = (name, bias_name(name))
                self.kinds[name] = getattr(mla, role).kind
        mixer_norms = None if attention or arch.mixer is None or arch.mixer.norms is None else dict(arch.mixer.norms)
        for role in NORM_ROLES:   # a mixer layer's norms where they differ from the attention layers' (olmo_hybrid)
            candidates = getattr(arch, role) if mixer_norms is None else mixer_norms.get(role, ())
            norm = next((n for n in candidates if n.name is None or prefix + n.name in self.t), None)
            if norm is not None and norm.name is not None:
                roles[role] = (prefix + norm.name, bias_name(prefix + norm.name))
                self.kinds[prefix + norm.name] = norm.kind
        ffn = next((f for f in arch.ffn if prefix + f.up.name.format(e=0) in self.t), None)
        if ffn is None and arch.layer_kinds is not None and arch.layer_kinds.ffn_kinds:
            return roles, []   # a single-block model's attention or mixer block (nemotron_h)
        if ffn is None:
            raise HurefError(f"attacks: tensor '{prefix + arch.ffn[0].up.name.format(e=0)}' is missing")

        def add_unit(label, unit: FFN, e=0):
            for sub in ("gate", "up", "down"):
                if getattr(unit, sub) is not None:
                    add(label + sub, getattr(unit, sub), e, unit.experts)
            return (label + "gate" if unit.gate is not None else None, label + "up", label + "down")

        if not ffn.experts:
            return roles, [add_unit("", ffn)]
        units = [add_unit(f"expert{e}.", ffn, e) for e in range(lay.n_experts)]
        if ffn.router:
            roles["router"] = (prefix + ffn.router, bias_name(prefix + ffn.router))
        if ffn.router_bias:
            roles["router_bias"] = (prefix + ffn.router_bias, None)
        if ffn.shared is not None:
            units.append(add_unit("shared.", ffn.shared))
            if ffn.shared.router:
                roles["shared_router"] = (prefix + ffn.shared.router, bias_name(prefix + ffn.shared.router))
        return roles, units

    def _split(self):
        """Replace each fused tensor (and its bias) by its parts, through huref.layers.LAYOUTS' row maps."""
        self.shapes = {}
        for name in self.transposed:   # [in, out] -> [out, in]; 3-D experts per expert
            shape = self.flat.get(name)
            value = self.t[name] if shape is None else self.t[name].reshape(self.layout.dims.n_experts, -1, shape[-1])
            self.t[name] = value.transpose(-1, -2)
        for stored, parts in self.fused.items():
            for name in (stored, bias_name(stored)):
                if name not in self.t:
                    continue
                value = self.t.pop(name)
                self.shapes[name] = value.shape
                rows = value.reshape(-1, value.shape[-1]) if name == stored else value.reshape(-1)  # [rows, in] or [rows]
                for tag, layout, part, e in parts:
                    self.t[name + tag] = rows[_rows(LAYOUTS[layout](part, self.layout.dims, rows.shape[0], e))].clone()

    def join(self) -> dict:
        """The tensors in their saved form: parts written back into their fused tensors, Conv1D weights [in, out]."""
        out = dict(self.t)
        for stored, parts in self.fused.items():
            for name in (stored, bias_name(stored)):
                if name not in self.shapes:
                    continue
                shape = self.shapes[name]
                pieces = [out.pop(name + tag) for tag, *_ in parts]
                weight = name == stored
                n_rows = math.prod(shape[:-1]) if weight else math.prod(shape)
                rows = pieces[0].new_empty(n_rows, *shape[-1:] if weight else ())
                for piece, (tag, layout, part, e) in zip(pieces, parts):
                    rows[_rows(LAYOUTS[layout](part, self.layout.dims, n_rows, e))] = piece
                out[name] = rows.reshape(shape)
        for name in self.transposed:
            out[name] = out[name].transpose(-1, -2).contiguous()
            if name in self.flat:
                out[name] = out[name].reshape(self.flat[name])
        return out

    def name(self, i, role, suffix="weight"):
        """Key of `role`'s weight/bias in layer i (i=None: `role` is the weight's full name); None if absent."""
        if i is None:
            return role if suffix == "weight" else bias_name(role)
        names = self.roles[i].get(role)
        return None if names is None else names[0 if suffix == "weight" else 1]

    def kind(self, i, role) -> str | None:
        """The norm kind ("rms", "rms_plus1", "layer", "layer_plus1") of norm `role`."""
        return self.kinds.get(self.name(i, role))

    def get(self, i, role, suffix="weight"):
        key = self.name(i, role, suffix)
        return self.t.get(key) if key else None

    def put(self, i, role, value, suffix="weight"):
        key = self.name(i, role, suffix)
        assert key in self.t, key
        self.t[key] = value

    def update(self, i, role, fn, suffix="weight"):
        """Replace the tensor (if present) by fn(tensor)."""
        value = self.get(i, role, suffix)
        if value is not None:
            self.put(i, role, fn(value), suffix)

    def ffn_units(self, i):
        """The FFNs of layer i as role lists [(gate or None, up, down)]: dense, or each expert and the shared one."""
        return self.units[i]


def edit_checkpoint(checkpoint: Checkpoint, fn) -> Checkpoint:
    """Apply fn(canon, result) to a split copy of `checkpoint` and return the joined result (config copied)."""
    layout = layout_of(checkpoint.config)
    canon = Canon(checkpoint.tensors, layout)
    result = Checkpoint(canon.t, copy.deepcopy(checkpoint.config), copy.deepcopy(checkpoint.tokenizer),
                        copy.deepcopy(checkpoint.extras))
    fn(canon, result)
    result.tensors = canon.join()
    return result


# ------------------------------------------------------------------------------ roles read and written

# the layout facts that decide which tensors read and write the residual stream (`reader_groups`, `writers`)
RESIDUAL_FACTS = ("input norms", "parallel block", "post norms", "residual norm", "norm residual", "embedding norm",
                  "final norm", "attention", "attention storage", "output storage", "write biases", "shared kv",
                  "position embeddings", "reader biases", "ffn storage", "ffn kinds", "router", "token mixer",
                  "layer kinds", "tied head", "head reader", "head bias")


def norm_gain(canon, i, role):
    """(gain as the forward multiplies it, bias) of a norm, or (None, None) when it has no parameters."""
    if role is None:
        return None, None
    weight, bias = canon.get(i, role), canon.get(i, role, "bias")
    if weight is None:
        return None, bias
    return (weight.double() + 1 if canon.kind(i, role) in PLUS_ONE_KINDS else weight.double()), bias


def set_gain(canon, i, role, gain):
    if canon.get(i, role) is not None:
        canon.put(i, role, (gain - 1 if canon.kind(i, role) in PLUS_ONE_KINDS else gain).float())


def reader_groups(canon, i):
    """[(norm role or None, reader roles)] of layer i: each norm (if any) and the matrices reading its output."""
    attn = ["q", "k", "v", "q_a", "kv_a", "attn_gate", "attn_router"]   # those the layer has (q_a, kv_a: MLA)
    attn += [role for role in canon.roles[i] if role.startswith(("mixer_in", "indexer_in")) or role.endswith(".q")]
    ffn = [r for unit in canon.ffn_units(i) for r in unit[:2] if r is not None]
    ffn += [r for r in ("router", "shared_router") if canon.get(i, r) is not None]
    attn_norm, ffn_norm = (role if canon.get(i, role) is not None else None for role in ("attn_norm", "ffn_norm"))
    if attn_norm and canon.name(i, attn_norm) == canon.name(i, ffn_norm):   # a parallel block (gptj, phi, falcon)
        return [(attn_norm, attn + ffn)]
    return [(attn_norm, attn), (ffn_norm, ffn)]


def query_roles(canon, i):
    """The query matrices of layer i: q, or each attention expert's."""
    return [role for role in canon.roles[i] if role == "q" or role.startswith("attn_expert") and role.endswith(".q")]


def output_roles(canon, i):
    """The attention output matrices of layer i: o, or each attention expert's (in `query_roles`' order)."""
    return [role for role in canon.roles[i] if role == "o" or role.startswith("attn_expert") and role.endswith(".o")]


def mixer_writers(canon, i):
    """Roles of layer i whose output is the token mixer's write: o (or the attention experts' outputs) and
    a hybrid's mixer writers."""
    return (output_roles(canon, i) or ["o"]) + [role for role in canon.roles[i] if role.startswith("mixer_out")]


def writers(canon, i):
    """Roles of layer i whose output is added to the residual stream (their rows live in it), and the
    biases added after a write (write_bias<j>, vectors in it)."""
    return (mixer_writers(canon, i) + [unit[2] for unit in canon.ffn_units(i)]
            + [role for role in canon.roles[i] if role.startswith("write_bias")])


def untie(canon, result):
    """Give the head its own tensor (a copy of the embedding) if the two were tied."""
    lay = canon.layout
    if lay.tied and canon.name(None, lay.head) not in canon.t:
        canon.t[canon.name(None, lay.head)] = canon.t[canon.name(None, lay.embed)].clone()
        if lay.head_bias:   # bert: the decoder's own bias, saved only once untied
            canon.t[bias_name(lay.head)] = canon.t[lay.head_bias].clone()
    result.config["tie_word_embeddings"] = False
