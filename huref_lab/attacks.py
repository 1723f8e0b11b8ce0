"""Function-preserving rewrites of a Hugging Face checkpoint: the attacks a fingerprint must survive.

Each attack takes a `Checkpoint` (the tensors under their saved names, config.json, tokenizer.json) and a
torch.Generator, and returns a new Checkpoint whose weights differ but whose logits are the same (for
the vocabulary attacks: the same after mapping token ids through the tokenizer). Which attacks apply to
an architecture is data: `valid_attacks(layout)` reads the properties of its `Layout` (norm kind, post
norms, QK norms, ALiBi, FFN kind, experts).

Orientation: every matrix is handled as HF nn.Linear stores it, [out, in]; residual vectors are columns.
A residual-stream change of basis x -> T x turns a reader W into W T^-1 and a writer W into T W; for
orthogonal T that is W T^T.

Which tensor plays which role comes from huref.architectures (the one table the fingerprinting reads
too). Fused tensors (gpt2 c_attn, gpt_neox/bloom per-head query_key_value, falcon's multi-query and
grouped layouts, phi3 qkv_proj/gate_up_proj, 3-D experts, qwen3_next's query + output-gate rows) are
split into virtual parts named "<tensor>#q" etc. before an attack, by the row maps of
huref.layers.LAYOUTS, and joined again after it, their biases with them; gpt2's Conv1D weights and
gpt-oss's [expert, in, out] experts are transposed to [out, in] (per expert) and back.

A Checkpoint holds every tensor in memory as float32: this is for test and experiment models, not
for reading a 70B model (the fingerprinting itself never does that, see huref.sources).
`attack_directory(source, target, "rotation+reorder_vocabulary")` is the entry point for a saved model.
"""

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from huref.architectures import FFN, PLUS_ONE_KINDS, ArchSpec, Norm, Proj, arch_for_config
from huref.errors import HurefError
from huref.config import (EPS_KEYS, Dims, LatentDims, attention_layers, config_value, latent_dims, model_dims,
                          qk_norm_layers)
from huref.layers import LAYOUTS


# --------------------------------------------------------------------------------------------- checkpoints

# JSON files beside the weights that are carried over (their token ids follow a vocabulary reordering)
EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass
class Checkpoint:
    """A checkpoint in memory: `tensors` by saved name, `config` (config.json), `tokenizer` (tokenizer.json,
    or None) and `extras` (the EXTRA_FILES present, by file name)."""
    tensors: dict
    config: dict
    tokenizer: dict | None = None
    extras: dict = field(default_factory=dict)


def read_checkpoint(directory) -> Checkpoint:
    """Read config.json, every *.safetensors file and tokenizer.json (if present) from `directory`."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    if not tensors:
        raise HurefError(f"no *.safetensors in {directory}")
    tokenizer_path = directory / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text()) if tokenizer_path.exists() else None
    extras = {name: json.loads((directory / name).read_text()) for name in EXTRA_FILES if (directory / name).exists()}
    return Checkpoint({k: v.float() for k, v in tensors.items()}, config, tokenizer, extras)


def write_checkpoint(checkpoint: Checkpoint, directory, dtype: torch.dtype = torch.float32) -> Path:
    """Write `checkpoint` into `directory` as config.json + model.safetensors (tensors stored as `dtype`;
    anything but float32 rounds the weights) + tokenizer.json and the EXTRA_FILES it holds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(checkpoint.config, indent=2))
    save_file({k: v.to(dtype).contiguous() for k, v in checkpoint.tensors.items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    extras = dict(checkpoint.extras)
    if checkpoint.tokenizer is not None:
        (directory / "tokenizer.json").write_text(json.dumps(checkpoint.tokenizer))
        extras.setdefault("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"})
    for name, content in extras.items():
        (directory / name).write_text(json.dumps(content, indent=2))
    return directory


# ------------------------------------------------------------------------------------------ architectures

@dataclass
class Layout:
    """What the attacks need to know about one checkpoint's architecture (pure data): its ArchSpec row
    with the config's variants applied (huref.architectures, the one table of tensor roles), its sizes,
    and the config values a rewrite depends on. Tensor names are full names as transformers saves them."""
    model_type: str
    arch: ArchSpec
    dims: Dims
    rotary_dim: int          # leading dims of each head that RoPE rotates (0: no RoPE)
    tied: bool               # the head shares the embedding's tensor
    eps_key: str | None      # config.json key of the norm epsilon (None: the model fixes it)
    relu: bool
    reader_bias: bool        # config does not switch the q/k/v/FFN-input biases off
    clip_qkv: bool           # olmo: q, k, v are clamped, so only their values may not change
    mla: LatentDims | None = None   # multi-head latent attention sizes (None: ordinary attention)
    expert_groups: int = 1   # DeepSeek routes within groups of consecutive experts (config n_group)
    attention_layers: tuple[int, ...] = ()   # layers whose token mixer is attention (hybrids: not all)
    qk_norm_layers: tuple[int, ...] = ()     # attention layers with QK norms (llama4: its RoPE layers)

    n_layers = property(lambda self: self.dims.n_layers)
    hidden = property(lambda self: self.dims.hidden)
    n_heads = property(lambda self: self.dims.n_heads)
    n_kv_heads = property(lambda self: self.dims.n_kv_heads)
    head_dim = property(lambda self: self.dims.head_dim)

    @property
    def rotary_style(self) -> str | None:
        """"half": RoPE rotates pairs (p, p + r/2); "pairs": (2p, 2p + 1); None: no RoPE."""
        return self.arch.rope if self.rotary_dim else None

    @property
    def n_experts(self) -> int:
        return self.dims.n_experts if any(f.experts for f in self.arch.ffn) else 0

    @property
    def layer_norm(self) -> bool:
        return self.arch.layer_norm

    @property
    def pre_norms(self) -> bool:
        """Every block reads the residual stream through an input norm (with or without parameters)."""
        return bool(self.arch.attn_norm)

    @property
    def bare_norms(self) -> bool:
        """The input norms have no parameters (OLMo)."""
        return any(n.name is None for n in self.arch.attn_norm)

    @property
    def post_norms(self) -> bool:
        return bool(self.arch.attn_post_norm or self.arch.ffn_post_norm)

    @property
    def residual_post_norm(self) -> bool:
        """Post-LN (BERT): a norm over the residual sum, not just over a block's write."""
        return bool(self.arch.residual_norm)

    @property
    def qk_norm(self) -> str | None:
        """"head": per-head q/k norm; "row": over the whole projection; None: no QK norm."""
        return self.arch.q_norm[0].scope if self.arch.q_norm else None

    @property
    def gated(self) -> bool:
        return all(f.gate is not None for f in self.arch.ffn)

    @property
    def alibi(self) -> bool:
        return self.arch.alibi

    def full_name(self, name: str) -> str:
        """A tensor name of the ArchSpec (relative to the base model) as transformers saves it."""
        return self.arch.base_prefix + name

    @property
    def embed(self) -> str:
        return self.full_name(self.arch.embed)

    @property
    def pos_embeds(self) -> tuple[str, ...]:
        return tuple(self.full_name(name) for name, _ in self.arch.added_embeds)

    @property
    def emb_norm(self) -> str | None:
        return _norm_name(self, self.arch.embed_norm)

    @property
    def final_norm(self) -> str | None:
        return _norm_name(self, self.arch.final_norm)

    @property
    def head(self) -> str:
        return self.arch.head

    @property
    def head_bias(self) -> str | None:
        return self.arch.head_bias

    @property
    def head_reader(self) -> str | None:
        return self.arch.head_reader


def _norm_name(layout: Layout, norms: tuple[Norm, ...]) -> str | None:
    """Full name of a global norm's scale (None: no norm, or one without parameters)."""
    return layout.full_name(norms[0].name) if norms and norms[0].name else None


def layout_of(config: dict) -> Layout:
    """The Layout of a checkpoint with HF `config` (config.json as a dict)."""
    arch = arch_for_config(config)
    config = arch.settings(config)
    dims = model_dims(config, arch)
    rope = config.get("rope_parameters") or {}
    partial = config_value(config, "partial_rotary_factor", "rotary_pct",
                           default=rope.get("partial_rotary_factor", 1.0))
    mla = latent_dims(config) if arch.mla is not None else None
    rotary_dim = 0 if arch.rope is None else int(config_value(config, "rotary_dim", default=dims.head_dim * partial))
    if mla is not None:   # RoPE turns the rotary part of each head only
        rotary_dim = mla.rope
    activation = str(config_value(config, "hidden_act", "activation_function", "activation", default=""))
    return Layout(
        model_type=config["model_type"], arch=arch, dims=dims, rotary_dim=rotary_dim, mla=mla,
        attention_layers=attention_layers(config, arch, dims.n_layers),
        qk_norm_layers=qk_norm_layers(config, arch, dims.n_layers),
        expert_groups=int(config.get("n_group") or 1),
        tied=bool(config.get("tie_word_embeddings", True)),
        eps_key=None if arch.layer_norm_eps else next((key for key in EPS_KEYS if config.get(key) is not None), None),
        relu=activation == "relu", clip_qkv=config.get("clip_qkv") is not None,
        reader_bias=all(config.get(k) is not False
                        for k in ("bias", "use_bias", "use_qkv_bias", "enable_bias", "attention_bias")))


# ----------------------------------------------------------------------------- canonical (unfused) view

def _bias_name(weight_name: str) -> str:
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
            bias = _bias_name(stored)
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
            roles["attn_router"] = (prefix + arch.attn_experts.router, _bias_name(prefix + arch.attn_experts.router))
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
                roles[role] = (name, _bias_name(name))
                self.kinds[name] = getattr(mla, role).kind
        mixer_norms = None if attention or arch.mixer is None or arch.mixer.norms is None else dict(arch.mixer.norms)
        for role in NORM_ROLES:   # a mixer layer's norms where they differ from the attention layers' (olmo_hybrid)
            candidates = getattr(arch, role) if mixer_norms is None else mixer_norms.get(role, ())
            norm = next((n for n in candidates if n.name is None or prefix + n.name in self.t), None)
            if norm is not None and norm.name is not None:
                roles[role] = (prefix + norm.name, _bias_name(prefix + norm.name))
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
            roles["router"] = (prefix + ffn.router, _bias_name(prefix + ffn.router))
        if ffn.router_bias:
            roles["router_bias"] = (prefix + ffn.router_bias, None)
        if ffn.shared is not None:
            units.append(add_unit("shared.", ffn.shared))
            if ffn.shared.router:
                roles["shared_router"] = (prefix + ffn.shared.router, _bias_name(prefix + ffn.shared.router))
        return roles, units

    def _split(self):
        """Replace each fused tensor (and its bias) by its parts, through huref.layers.LAYOUTS' row maps."""
        self.shapes = {}
        for name in self.transposed:   # [in, out] -> [out, in]; 3-D experts per expert
            shape = self.flat.get(name)
            value = self.t[name] if shape is None else self.t[name].reshape(self.layout.dims.n_experts, -1, shape[-1])
            self.t[name] = value.transpose(-1, -2)
        for stored, parts in self.fused.items():
            for name in (stored, _bias_name(stored)):
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
            for name in (stored, _bias_name(stored)):
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
            return role if suffix == "weight" else _bias_name(role)
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


def _edit(checkpoint: Checkpoint, fn) -> Checkpoint:
    """Apply fn(canon, result) to a split copy of `checkpoint` and return the joined result (config copied)."""
    layout = layout_of(checkpoint.config)
    canon = Canon(checkpoint.tensors, layout)
    result = Checkpoint(canon.t, copy.deepcopy(checkpoint.config), copy.deepcopy(checkpoint.tokenizer),
                        copy.deepcopy(checkpoint.extras))
    fn(canon, result)
    result.tensors = canon.join()
    return result


# ------------------------------------------------------------------------------------------ random draws

def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, signs fixed), float64."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def orthogonal_fixing_ones(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal T with T·1 = 1 (commutes with LayerNorm's mean removal), float64."""
    basis = torch.cat([torch.ones(n, 1, dtype=torch.float64),
                       torch.randn(n, n - 1, generator=generator, dtype=torch.float64)], 1)
    basis, _ = torch.linalg.qr(basis)
    basis[:, 0] = basis[:, 0].abs()
    inner = torch.eye(n, dtype=torch.float64)
    inner[1:, 1:] = random_orthogonal(n - 1, generator)
    return basis @ inner @ basis.T


def random_scales(n: int, generator: torch.Generator, signed=True, spread=1.0) -> torch.Tensor:
    """n factors exp(U(-spread, spread)), each with a random sign when `signed`, float64."""
    scales = torch.exp((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * spread)
    if signed:
        scales = scales * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    return scales


def random_invertible(n: int, generator: torch.Generator) -> torch.Tensor:
    """A well-conditioned random invertible matrix: orthogonal · positive diagonal (0.37..2.7) · orthogonal."""
    return random_orthogonal(n, generator) @ torch.diag(random_scales(n, generator, signed=False)) @ \
        random_orthogonal(n, generator)


def _perm(n, generator):
    return torch.randperm(n, generator=generator)


def _f64(fn):
    """Run fn on a float64 copy and return float32."""
    return lambda x: fn(x.double()).float()


# ----------------------------------------------------------------------------- residual-stream rewrites

def _norm_gain(canon, i, role):
    """(gain as the forward multiplies it, bias) of a norm, or (None, None) when it has no parameters."""
    if role is None:
        return None, None
    weight, bias = canon.get(i, role), canon.get(i, role, "bias")
    if weight is None:
        return None, bias
    return (weight.double() + 1 if canon.kind(i, role) in PLUS_ONE_KINDS else weight.double()), bias


def _set_gain(canon, i, role, gain):
    if canon.get(i, role) is not None:
        canon.put(i, role, (gain - 1 if canon.kind(i, role) in PLUS_ONE_KINDS else gain).float())


def _reader_groups(canon, i):
    """[(norm role or None, reader roles)] of layer i: each norm (if any) and the matrices reading its output."""
    attn = ["q", "k", "v", "q_a", "kv_a", "attn_gate", "attn_router"]   # those the layer has (q_a, kv_a: MLA)
    attn += [role for role in canon.roles[i] if role.startswith(("mixer_in", "indexer_in")) or role.endswith(".q")]
    ffn = [r for unit in canon.ffn_units(i) for r in unit[:2] if r is not None]
    ffn += [r for r in ("router", "shared_router") if canon.get(i, r) is not None]
    attn_norm, ffn_norm = (role if canon.get(i, role) is not None else None for role in ("attn_norm", "ffn_norm"))
    if attn_norm and canon.name(i, attn_norm) == canon.name(i, ffn_norm):   # a parallel block (gptj, phi, falcon)
        return [(attn_norm, attn + ffn)]
    return [(attn_norm, attn), (ffn_norm, ffn)]


def _query_roles(canon, i):
    """The query matrices of layer i: q, or each attention expert's."""
    return [role for role in canon.roles[i] if role == "q" or role.startswith("attn_expert") and role.endswith(".q")]


def _output_roles(canon, i):
    """The attention output matrices of layer i: o, or each attention expert's (in `_query_roles`' order)."""
    return [role for role in canon.roles[i] if role == "o" or role.startswith("attn_expert") and role.endswith(".o")]


def _mixer_writers(canon, i):
    """Roles of layer i whose output is the token mixer's write: o (or the attention experts' outputs) and
    a hybrid's mixer writers."""
    return (_output_roles(canon, i) or ["o"]) + [role for role in canon.roles[i] if role.startswith("mixer_out")]


def _writers(canon, i):
    """Roles of layer i whose output is added to the residual stream (their rows live in it), and the
    biases added after a write (write_bias<j>, vectors in it)."""
    return (_mixer_writers(canon, i) + [unit[2] for unit in canon.ffn_units(i)]
            + [role for role in canon.roles[i] if role.startswith("write_bias")])


def _untie(canon, result):
    """Give the head its own tensor (a copy of the embedding) if the two were tied."""
    lay = canon.layout
    if lay.tied and canon.name(None, lay.head) not in canon.t:
        canon.t[canon.name(None, lay.head)] = canon.t[canon.name(None, lay.embed)].clone()
        if lay.head_bias:   # bert: the decoder's own bias, saved only once untied
            canon.t[_bias_name(lay.head)] = canon.t[lay.head_bias].clone()
    result.config["tie_word_embeddings"] = False


def change_residual_basis(canon: Canon, result: Checkpoint, T: torch.Tensor, fold: bool):
    """Rewrite the model for residual stream x -> T x (T [H, H], orthogonal, float64).

    fold=True: fold every pre-norm's gain (and LayerNorm bias, as T(b/g)) into the weights reading it and
    set the gain to 1, so T can be any orthogonal matrix (fixing the all-ones vector for LayerNorm).
    fold=False: T must be a (signed, for RMSNorm) permutation; norm gains and biases are permuted.
    """
    lay = canon.layout
    Tabs = T.abs()
    row_map = _f64(lambda w: w @ T.T)        # rows are residual vectors (embeddings)
    write = _f64(lambda w: T @ w)            # writer weights [H, *] and biases [H]

    def fold_into(i, norm_role, readers):
        gain, bias = _norm_gain(canon, i, norm_role)
        if fold and gain is not None:
            for r in readers:
                canon.update(i, r, _f64(lambda w: w @ torch.diag(gain) @ T.T))
            _set_gain(canon, i, norm_role, torch.ones_like(gain))
            if bias is not None:
                canon.put(i, norm_role, (T @ (bias.double() / gain)).float(), "bias")
        else:
            for r in readers:
                canon.update(i, r, _f64(lambda w: w @ T.T))
            if gain is not None:
                _set_gain(canon, i, norm_role, Tabs @ gain)
            if bias is not None:
                canon.put(i, norm_role, write(bias), "bias")

    final_gain = _norm_gain(canon, None, lay.final_norm)[0] if lay.final_norm else None
    if lay.tied and (lay.head_reader is not None or fold and final_gain is not None):
        _untie(canon, result)   # the head does not follow the embedding (folded gain, or bert's own space)
    for name in (lay.embed, *lay.pos_embeds):
        canon.update(None, name, row_map)
    if lay.emb_norm:   # bloom / bert: the embedding LayerNorm's output starts the residual stream
        canon.update(None, lay.emb_norm, lambda g: (Tabs @ g.double()).float())
        canon.update(None, lay.emb_norm, write, "bias")
    for i in range(lay.n_layers):
        for norm_role, readers in _reader_groups(canon, i):
            fold_into(i, norm_role, readers)
        for role in _writers(canon, i):
            canon.update(i, role, write)
            canon.update(i, role, write, "bias")
        for role in ("attn_post_norm", "ffn_post_norm", "residual_norm"):
            if canon.get(i, role) is not None:
                gain, bias = _norm_gain(canon, i, role)
                _set_gain(canon, i, role, Tabs @ gain)
                if bias is not None:
                    canon.put(i, role, write(bias), "bias")
    # a head still tied to the embedding is absent from the tensors and was rewritten with it
    fold_into(None, lay.final_norm, [lay.head_reader or lay.head])


def rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Fold the pre-norm gains into the weights and rotate the residual stream by a random orthogonal matrix.

    RMSNorm models get a Haar-random rotation; LayerNorm models one that fixes the all-ones vector, with
    the LayerNorm bias carried as T(b/g). A tied head is untied (it absorbs the final norm's gain).
    """
    layout = layout_of(checkpoint.config)
    draw = orthogonal_fixing_ones if layout.layer_norm else random_orthogonal
    T = draw(layout.hidden, generator)
    return _edit(checkpoint, lambda canon, result: change_residual_basis(canon, result, T, fold=True))


def zhu_rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """The model-tracing attack of Zhu et al., "Independence Tests for Language Models" (ICML 2025).

    As in their `rotate_model` (github.com/salzhu/model-tracing, tracing/utils/llama/model.py): multiply
    q/k/v and gate/up by diag(input norm gain) and a Haar-random orthogonal R, o/down by R^T on the left,
    embeddings by R, the head by diag(final norm gain)·R, and set every RMSNorm gain to one. Here that is
    `change_residual_basis` with T = R^T; it applies to RMSNorm pre-norm models only.
    """
    layout = layout_of(checkpoint.config)
    R = random_orthogonal(layout.hidden, generator)
    return _edit(checkpoint, lambda canon, result: change_residual_basis(canon, result, R.T, fold=True))


def residual_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the residual stream's coordinates (with random sign flips for RMSNorm models), norms permuted too.

    The residual change of basis that survives post-norms (gemma2/3, olmo2, bert) and an embedding LayerNorm
    (bloom); sign flips would break LayerNorm's mean, so LayerNorm models get a plain permutation.
    """
    layout = layout_of(checkpoint.config)
    T = torch.eye(layout.hidden, dtype=torch.float64)[_perm(layout.hidden, generator)]
    if not layout.layer_norm:
        T = T * random_scales(layout.hidden, generator, spread=0.0)[:, None]
    return _edit(checkpoint, lambda canon, result: change_residual_basis(canon, result, T, fold=False))


# ------------------------------------------------------------------------------------ attention rewrites

def _rotary_pairs(layout: Layout) -> list[tuple[int, int]]:
    """The (i, j) dimension pairs of a head that RoPE rotates together."""
    r = layout.rotary_dim
    if layout.rotary_style == "pairs":
        return [(2 * p, 2 * p + 1) for p in range(r // 2)]
    return [(p, p + r // 2) for p in range(r // 2)]


def rope_commuting_matrix(layout: Layout, generator: torch.Generator, d: int | None = None) -> torch.Tensor:
    """A random invertible d x d map M (d: the head dim by default) with (M q)·(M^-T k) = q·k that
    commutes with RoPE.

    Each rotary pair gets a scaled 2-D rotation s·R(θ) (it commutes with RoPE's rotation of that plane);
    the non-rotary dims get an arbitrary well-conditioned invertible block.
    """
    d = d or layout.head_dim
    M = torch.zeros(d, d, dtype=torch.float64)
    pairs = _rotary_pairs(layout)
    for a, b in pairs:
        theta = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 * math.pi
        s = float(random_scales(1, generator)[0])
        M[a, a], M[a, b], M[b, a], M[b, b] = s * math.cos(theta), -s * math.sin(theta), s * math.sin(theta), s * math.cos(theta)
    rest = [j for j in range(d) if j not in {x for pair in pairs for x in pair}]
    if rest:
        M[torch.tensor(rest)[:, None], torch.tensor(rest)] = random_invertible(len(rest), generator)
    return M


def _per_kv_head(canon, i, maps_q, maps_k):
    """Apply maps_q[j] to the rows of every query head in group j (of q, or of each attention expert's
    queries) and maps_k[j] to key head j (weights and biases)."""
    d = canon.layout.head_dim

    def by_head(maps):
        def apply(w):
            n_heads = w.shape[0] // d   # [n_heads * d, *] -> per head [d, *]; group j: heads j * per_group ...
            heads = w.double().reshape(n_heads, d, *w.shape[1:])
            out = torch.stack([maps[h // (n_heads // len(maps))] @ heads[h].reshape(d, -1) for h in range(n_heads)])
            return out.reshape(w.shape).float()
        return apply

    for suffix in ("weight", "bias"):
        for role in _query_roles(canon, i):
            canon.update(i, role, by_head(maps_q), suffix)
        canon.update(i, "k", by_head(maps_k), suffix)


def qk_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: queries -> M q, keys -> M^-T k with M commuting with RoPE (shared across a GQA group)."""
    def edit(canon, result):
        for i in canon.layout.attention_layers:
            maps = [rope_commuting_matrix(canon.layout, generator) for _ in range(canon.layout.n_kv_heads)]
            _per_kv_head(canon, i, maps, [torch.linalg.inv(m).T for m in maps])
    return _edit(checkpoint, edit)


def qk_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: queries times c, keys divided by c (c random, either sign)."""
    def edit(canon, result):
        eye = torch.eye(canon.layout.head_dim, dtype=torch.float64)
        for i in canon.layout.attention_layers:
            scales = random_scales(canon.layout.n_kv_heads, generator, spread=1.5)
            _per_kv_head(canon, i, [c * eye for c in scales], [eye / c for c in scales])
    return _edit(checkpoint, edit)


def qk_norm_rescale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """QK-norm models: scale W_q and W_k by positive factors the q/k norms divide out again.

    Per-head norms (qwen3, gemma3): every query head and every key head gets its own factor; a norm over the
    whole projection (olmo2): one factor for all queries and one for all keys.
    """
    def edit(canon, result):
        lay = canon.layout
        for i in lay.qk_norm_layers:
            n_q, n_k = (lay.n_heads, lay.n_kv_heads) if lay.qk_norm == "head" else (1, 1)
            # factors >= 1, so the norms' epsilon matters even less than in the original
            cq, ck = (1 + random_scales(n, generator, signed=False, spread=1.5) for n in (n_q, n_k))
            for role, c, n in (("q", cq, lay.n_heads), ("k", ck, lay.n_kv_heads)):
                per_head = c.repeat_interleave(n // len(c)).repeat_interleave(lay.head_dim)
                canon.update(i, role, _f64(lambda w: w * per_head[:, None]))
                canon.update(i, role, _f64(lambda b: b * per_head), "bias")
    return _edit(checkpoint, edit)


def qk_norm_gain_exchange(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """QK-norm models: q_norm gain (and a LayerNorm's bias) times s, k_norm's divided by s, s equal on both
    dims of each rotary pair: every product of a query and a key dimension is unchanged."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        rep = lay.n_heads // lay.n_kv_heads
        n_groups = lay.n_kv_heads if lay.qk_norm == "row" else 1
        for i in lay.qk_norm_layers:
            s = random_scales(n_groups * d, generator, spread=1.0).reshape(n_groups, d)
            for a, b in _rotary_pairs(lay):
                s[:, b] = s[:, a]
            s_k = s.reshape(-1)
            s_q = s.repeat_interleave(rep, 0).reshape(-1) if lay.qk_norm == "row" else s_k
            for role, factor in (("q_norm", s_q), ("k_norm", 1 / s_k)):
                gain, _ = _norm_gain(canon, i, role)
                _set_gain(canon, i, role, gain * factor)
                canon.update(i, role, _f64(lambda b: b * factor), "bias")
    return _edit(checkpoint, edit)


def vo_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: values -> A v, and the output projection columns of its query heads (of o, or of
    every attention expert's output) times A^-1."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        for i in lay.attention_layers:
            maps = [random_invertible(d, generator) for _ in range(lay.n_kv_heads)]
            inverse = [torch.linalg.inv(m) for m in maps]

            def values(w):
                heads = w.double().reshape(lay.n_kv_heads, d, -1)
                return torch.stack([maps[j] @ heads[j] for j in range(lay.n_kv_heads)]).reshape(w.shape).float()

            def output(w):
                n_heads = w.shape[1] // d
                rep = n_heads // lay.n_kv_heads
                cols = w.double().reshape(w.shape[0], n_heads, d)
                return torch.stack([cols[:, h] @ inverse[h // rep] for h in range(n_heads)], 1).reshape(w.shape).float()

            canon.update(i, "v", values)
            canon.update(i, "v", values, "bias")
            for role in _output_roles(canon, i):
                canon.update(i, role, output)
    return _edit(checkpoint, edit)


def head_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Reorder the attention heads: key/value heads by a permutation, query heads within and with their groups
    (with attention experts: every expert's query and output heads as the key/value heads they read)."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        for i in lay.attention_layers:
            rep = canon.get(i, _query_roles(canon, i)[0]).shape[0] // d // lay.n_kv_heads
            kv_order = _perm(lay.n_kv_heads, generator)
            q_order = torch.cat([kv_order[a] * rep + _perm(rep, generator) for a in range(lay.n_kv_heads)])
            rows_q = (q_order[:, None] * d + torch.arange(d)).reshape(-1)
            rows_kv = (kv_order[:, None] * d + torch.arange(d)).reshape(-1)
            for suffix in ("weight", "bias"):
                for role in _query_roles(canon, i):
                    canon.update(i, role, lambda w: w[rows_q], suffix)
                for role in ("k", "v"):
                    canon.update(i, role, lambda w: w[rows_kv], suffix)
            for role in _output_roles(canon, i):
                canon.update(i, role, lambda w: w[:, rows_q])
            canon.update(i, "attn_gate", lambda w: w[rows_q])   # each head's output gate goes with it
            canon.update(i, "attn_gate", lambda b: b[rows_q], "bias")
            canon.update(i, "sinks", lambda s: s[q_order])      # and its sink logit
            if lay.qk_norm == "row":
                canon.update(i, "q_norm", lambda g: g[rows_q])
                canon.update(i, "k_norm", lambda g: g[rows_kv])
    return _edit(checkpoint, edit)


# ------------------------------------------------------------------------- multi-head latent attention

def _by_heads(canon, i, role, per_head: int, fn, columns=False, suffixes=("weight", "bias")):
    """Replace `role` (its rows, or its columns with `columns`) viewed per head as [n_heads, per_head, rest]
    by fn(that view) (float64, same shape)."""
    def apply(w):
        x = w.double().T if columns else w.double()
        out = fn(x.reshape(canon.layout.n_heads, per_head, -1)).reshape(x.shape)
        return (out.T if columns else out).contiguous().float()
    for suffix in suffixes:
        canon.update(i, role, apply, suffix)


def _per_head_maps(maps):
    """fn for `_by_heads`: head h's block [per_head, rest] -> maps[h] @ block."""
    return lambda heads: torch.stack([maps[h] @ heads[h] for h in range(len(heads))])


def _query_role(canon, i) -> str:
    """The MLA matrix writing every head's query rows: q_b behind a q latent, else q."""
    return "q_b" if canon.get(i, "q_b") is not None else "q"


def latent_rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: rotate the q latent and the kv latent by random orthogonal maps U, the latent norm gains g
    folded into the matrices reading them: q_a -> U·q_a, q_b -> q_b·diag(g)·Uᵀ, gain set to 1 (RMS
    commutes with U, a gain does not), and so the sparse-attention indexer's wq_b, which reads the q latent
    too; kv_a's latent rows -> U·rows (its rotary key rows stay), kv_b -> kv_b·diag(g)·Uᵀ."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for writer, norm, readers in (("q_a", "q_a_norm", ("q_b", "indexer_q")), ("kv_a", "kv_a_norm", ("kv_b",))):
                if canon.get(i, writer) is None:
                    continue
                gain = canon.get(i, norm).double()
                r = len(gain)
                U = random_orthogonal(r, generator)
                for reader in readers:
                    canon.update(i, reader, _f64(lambda w: w @ torch.diag(gain) @ U.T))
                canon.put(i, norm, torch.ones_like(gain).float())
                for suffix in ("weight", "bias"):
                    canon.update(i, writer, _f64(lambda w: torch.cat([U @ w[:r], w[r:]])), suffix)
    return _edit(checkpoint, edit)


def mla_head_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: reorder the heads: query rows (nope + rope per head), kv_b rows (k + v per head), o columns."""
    def edit(canon, result):
        m = canon.layout.mla
        for i in range(canon.layout.n_layers):
            order = _perm(canon.layout.n_heads, generator)
            _by_heads(canon, i, _query_role(canon, i), m.nope + m.rope, lambda heads: heads[order])
            _by_heads(canon, i, "kv_b", m.nope + m.v, lambda heads: heads[order])
            _by_heads(canon, i, "o", m.v, lambda heads: heads[order], columns=True, suffixes=("weight",))
    return _edit(checkpoint, edit)


def mla_qk_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: per head an invertible A_h on the non-rotary query rows and A_h^-T on that head's key rows in
    kv_b; one RoPE-commuting M on every head's rotary query rows and M^-T on the shared rotary key rows
    of kv_a (one M for all heads, since they share that key)."""
    def edit(canon, result):
        lay, m = canon.layout, canon.layout.mla
        for i in range(lay.n_layers):
            A = [random_invertible(m.nope, generator) for _ in range(lay.n_heads)]
            M = rope_commuting_matrix(lay, generator, m.rope)
            q_maps = [torch.block_diag(a, M) for a in A]
            k_maps = [torch.block_diag(torch.linalg.inv(a).T, torch.eye(m.v, dtype=torch.float64)) for a in A]
            _by_heads(canon, i, _query_role(canon, i), m.nope + m.rope, _per_head_maps(q_maps))
            _by_heads(canon, i, "kv_b", m.nope + m.v, _per_head_maps(k_maps))
            key_map = torch.block_diag(torch.eye(m.kv_rank, dtype=torch.float64), torch.linalg.inv(M).T)
            for suffix in ("weight", "bias"):
                canon.update(i, "kv_a", _f64(lambda w: key_map @ w), suffix)
    return _edit(checkpoint, edit)


def mla_vo_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: per head an invertible B_h on the value rows of kv_b, and o's columns of that head times B_h^-1."""
    def edit(canon, result):
        lay, m = canon.layout, canon.layout.mla
        for i in range(lay.n_layers):
            B = [random_invertible(m.v, generator) for _ in range(lay.n_heads)]
            v_maps = [torch.block_diag(torch.eye(m.nope, dtype=torch.float64), b) for b in B]
            _by_heads(canon, i, "kv_b", m.nope + m.v, _per_head_maps(v_maps))
            # o's columns of head h, as rows [v, hidden]: B_h^-T @ rows  (o_h -> o_h·B_h^-1)
            _by_heads(canon, i, "o", m.v, _per_head_maps([torch.linalg.inv(b).T for b in B]), columns=True,
                      suffixes=("weight",))
    return _edit(checkpoint, edit)


# ------------------------------------------------------------------------------------------ FFN rewrites

def ffn_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the hidden neurons of every FFN (each expert and the shared expert separately)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for gate, up, down in canon.ffn_units(i):
                order = _perm(canon.get(i, up).shape[0], generator)
                for role in (gate, up):
                    if role is not None:
                        canon.update(i, role, lambda w: w[order])
                        canon.update(i, role, lambda b: b[order], "bias")
                canon.update(i, down, lambda w: w[:, order])
    return _edit(checkpoint, edit)


def ffn_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Scale each FFN neuron's input by c and its output by 1/c.

    Gated FFNs: the up projection, any sign (act(gate)·(c·up) is linear in up). Plain ReLU FFNs: the input
    projection with c > 0 (relu(c·x) = c·relu(x)).
    """
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for gate, up, down in canon.ffn_units(i):
                scales = random_scales(canon.get(i, up).shape[0], generator, signed=gate is not None, spread=1.5)
                canon.update(i, up, _f64(lambda w: w * scales[:, None]))
                canon.update(i, up, _f64(lambda b: b * scales), "bias")
                canon.update(i, down, _f64(lambda w: w / scales))
    return _edit(checkpoint, edit)


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
                order = torch.cat([g * size + _perm(size, generator) for g in _perm(groups, generator)])
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
    return _edit(checkpoint, edit)


# ---------------------------------------------------------------------------------- scale and mean shifts

def embedding_scale(checkpoint: Checkpoint, generator: torch.Generator, factor: float = 3.7) -> Checkpoint:
    """Scale the whole residual stream by `factor`: embeddings and every residual write times c, norm eps times c².

    Pre-norms see c·x with eps·c², so their output is unchanged; post-norm gains (the writes of gemma2/3)
    are scaled instead of the matrices before them, and QK-norm inputs are scaled by c to match their eps.
    """
    def edit(canon, result):
        lay = canon.layout
        times = _f64(lambda w: w * factor)
        for name in (lay.embed, *lay.pos_embeds):
            canon.update(None, name, times)
        if lay.emb_norm:
            canon.update(None, lay.emb_norm, times)
            canon.update(None, lay.emb_norm, times, "bias")
        for i in range(lay.n_layers):
            for role in _writers(canon, i):   # with a post-norm this keeps its input in step with its eps
                canon.update(i, role, times)
                canon.update(i, role, times, "bias")
            for post in ("attn_post_norm", "ffn_post_norm"):
                if canon.get(i, post) is not None:
                    gain, _ = _norm_gain(canon, i, post)
                    _set_gain(canon, i, post, gain * factor)
            if i in lay.qk_norm_layers:
                for role in ("q", "k"):
                    canon.update(i, role, times)
                    canon.update(i, role, times, "bias")
        if lay.tied and lay.head_reader is None:
            _untie(canon, result)
            canon.update(None, lay.head, _f64(lambda w: w / factor))
        result.config[lay.eps_key] = result.config[lay.eps_key] * factor ** 2
    return _edit(checkpoint, edit)


def post_norm_rescale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Post-norm models (gemma2/3, olmo2): scale the attention output and FFN down projections by factors
    >= 1 per layer; the norm on each write divides them out (its epsilon matters even less afterwards)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for post, roles in (("attn_post_norm", _mixer_writers(canon, i)),
                                ("ffn_post_norm", [unit[2] for unit in canon.ffn_units(i)])):
                if canon.name(i, post) is None:   # no norm on this write (olmo_hybrid's delta-net layers)
                    continue
                c = 1 + float(random_scales(1, generator, signed=False, spread=1.5)[0])
                for role in roles:
                    canon.update(i, role, _f64(lambda w: w * c))
                    canon.update(i, role, _f64(lambda b: b * c), "bias")
    return _edit(checkpoint, edit)


def layernorm_null_direction(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """LayerNorm pre-norm models: add u·(1/g)ᵀ to each matrix reading a LayerNorm (gain g, bias b).

    The normalised input z is centred, so (u·(1/g)ᵀ)(g∘z + b) = u·Σ(b/g): a constant, moved into the
    reader's bias. Readers without a bias are left alone (unless the norm has no bias at all).
    """
    def edit(canon, result):
        lay = canon.layout

        def shift(i, norm_role, readers):
            gain, bias = _norm_gain(canon, i, norm_role)
            gain = torch.ones(lay.hidden, dtype=torch.float64) if gain is None else gain
            offset = 0.0 if bias is None else float((bias.double() / gain).sum())
            for r in readers:
                w = canon.get(i, r)
                if w is None or (canon.get(i, r, "bias") is None and offset != 0.0):
                    continue
                u = float(w.std()) * torch.randn(w.shape[0], generator=generator, dtype=torch.float64)
                canon.put(i, r, (w.double() + u[:, None] / gain).float())
                canon.update(i, r, _f64(lambda b: b - u * offset), "bias")

        for i in range(lay.n_layers):
            for norm_role, readers in _reader_groups(canon, i):
                shift(i, norm_role, readers)
        shift(None, lay.final_norm, [lay.head])
    return _edit(checkpoint, edit)


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
    return _edit(checkpoint, edit)


def embedding_row_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Models whose token embedding goes straight into a norm and nowhere else (bloom's embedding LayerNorm,
    minimax's first input norm): scale each token's row by its own factor >= 1; the norm divides it out (its epsilon matters even less afterwards). The head is untied."""
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            _untie(canon, result)
        name = canon.name(None, lay.embed)
        factors = 1 + random_scales(canon.t[name].shape[0], generator, signed=False, spread=1.5)
        canon.t[name] = (canon.t[name].double() * factors[:, None]).float()
    return _edit(checkpoint, edit)


def position_embedding_shift(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Learned absolute positions (gpt2, gpt_neo, opt, bert): add one vector v to every token embedding row
    and subtract it from every row of the other embedding each input adds (positions). The sum entering
    the model is unchanged; the head is untied from the embedding."""
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            _untie(canon, result)
        embed = canon.name(None, lay.embed)
        v = 2 * float(canon.t[embed].std()) * torch.randn(lay.hidden, generator=generator)
        canon.t[embed] = canon.t[embed] + v
        canon.update(None, lay.pos_embeds[0], lambda w: w - v)
    return _edit(checkpoint, edit)


def mean_shift(checkpoint: Checkpoint, generator: torch.Generator, magnitude: float = 1.0) -> Checkpoint:
    """LayerNorm models: add multiples of the all-ones vector to every embedding row and every residual write.

    LayerNorm removes the mean, so nothing downstream sees the shift; the head is untied from the embedding.
    The shifts are about `magnitude` times the embedding's standard deviation.
    """
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            _untie(canon, result)
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
            for role in _writers(canon, i):
                canon.update(i, role, shift_writer)
                canon.update(i, role, shift_bias, "bias")
    return _edit(checkpoint, edit)


# ---------------------------------------------------------------------------------------- vocabularies

def vocabulary(tokenizer: dict) -> dict:
    """token string -> id of a parsed tokenizer.json (model vocabulary plus added tokens)."""
    vocab = tokenizer["model"]["vocab"]
    ids = {piece: i for i, (piece, _) in enumerate(vocab)} if isinstance(vocab, list) else dict(vocab)
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids


def _vocab_rows(canon):
    """(name, kind) of every tensor indexed by token id: embedding, head (if untied), head bias."""
    lay = canon.layout
    names = [canon.name(None, lay.embed), canon.name(None, lay.head)]
    names += [_bias_name(lay.head), lay.head_bias]
    return [n for n in names if n in canon.t]


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
    return _edit(checkpoint, edit)


def reorder_vocabulary(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the token ids: embedding/head rows and the tokenizer's ids (and the config's special ids) together."""
    def edit(canon, result):
        n = canon.t[canon.name(None, canon.layout.embed)].shape[0]
        order = _perm(n, generator)                       # new id j holds old id order[j]
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
    return _edit(checkpoint, edit)


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
    picked = [pool[int(j)] for j in _perm(len(pool), generator)[:len(letters)]]
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


# ------------------------------------------------------------------------------------------- the suite

def compose(*attacks):
    """One attack applying `attacks` in order."""
    def composed(checkpoint, generator):
        for attack in attacks:
            checkpoint = attack(checkpoint, generator)
        return checkpoint
    composed.__name__ = "+".join(a.__name__ for a in attacks)
    return composed


ATTACKS = {f.__name__: f for f in (
    rotation, zhu_rotation, residual_permutation, qk_transform, qk_scale, qk_norm_rescale, qk_norm_gain_exchange,
    vo_transform, head_permutation, latent_rotation, mla_head_permutation, mla_qk_transform, mla_vo_transform,
    ffn_permutation, ffn_scale, expert_permutation, embedding_scale,
    post_norm_rescale, embedding_row_scale, position_embedding_shift, mean_shift, layernorm_null_direction, router_shift,
    append_vocabulary, reorder_vocabulary)}


def is_valid(name: str, layout: Layout) -> bool:
    """Whether attack `name` preserves the function of models with `layout` (the rules, as data, in one place)."""
    layer_norm = layout.layer_norm
    mla = layout.mla is not None
    norm_residual = layout.arch.norm_residual
    # keys and values attended to by later layers (kolibri1_1): a head map, permutation or key-norm gain of the
    # source layer would have to reach every layer reading them, which these per-layer rewrites do not do
    shared_kv = layout.arch.kv_sources is not None
    rules = {
        # folding needs every residual read to go through a pre-norm and no norm on a residual write; the
        # gains cannot be folded where the norms' outputs are the residual path (minimax)
        "rotation": layout.pre_norms and not layout.post_norms and layout.emb_norm is None and not norm_residual,
        "zhu_rotation": not layer_norm and layout.pre_norms and not layout.post_norms and not norm_residual,
        "residual_permutation": True,
        "qk_transform": layout.qk_norm is None and not layout.clip_qkv and not mla,
        "qk_scale": layout.qk_norm is None and not layout.clip_qkv and not mla,
        "qk_norm_rescale": layout.qk_norm is not None and not layout.clip_qkv,
        "qk_norm_gain_exchange": layout.qk_norm is not None and layout.arch.q_norm[0].name is not None and not shared_kv,
        # an elementwise gate on each head's output (qwen3_next) does not commute with a V/O map
        "vo_transform": not layout.clip_qkv and not mla and layout.arch.attn_gate is None and not shared_kv,
        "head_permutation": not layout.alibi and not mla and not shared_kv,   # ALiBi slopes are tied to head positions
        # latent attention (MLA) has its own head layout, latent spaces and shared rotary key
        "latent_rotation": mla,
        "mla_head_permutation": mla,
        "mla_qk_transform": mla,
        "mla_vo_transform": mla,
        "ffn_permutation": True,
        # gpt-oss clamps up and adds 1 to it: the FFN sees up's scale
        "ffn_scale": (layout.gated and not layout.arch.ffn_clamped) or layout.relu,
        "expert_permutation": layout.n_experts > 0,
        # needs the norm epsilon in config.json, residual reads only through norms, an embedding norm (if
        # any) with a gain to scale (a bare one would divide the scale out of the stream's start), and no
        # hybrid mixer with norms of its own on that epsilon (whose inputs do not scale)
        "embedding_scale": layout.eps_key is not None and layout.pre_norms and not layout.residual_post_norm
                           and (not layout.arch.embed_norm or layout.emb_norm is not None)
                           and not (layout.arch.mixer and layout.arch.mixer.inner_norms) and not norm_residual,
        "post_norm_rescale": layout.post_norms and not layout.residual_post_norm,
        # the embedding norm must see the token embedding alone (bert adds position embeddings first); where
        # the norms' outputs are the residual path (minimax), layer 0's input norm is the embedding's only reader
        "embedding_row_scale": (layout.emb_norm is not None or norm_residual) and not layout.pos_embeds,
        "position_embedding_shift": bool(layout.pos_embeds),
        # the first block must read the embedding through a LayerNorm (openai-gpt's reads it raw)
        "mean_shift": layer_norm and (layout.pre_norms or layout.emb_norm is not None),
        "layernorm_null_direction": layer_norm and layout.pre_norms and not layout.residual_post_norm
                                    and (layout.reader_bias or layout.bare_norms),
        # a shift added to every expert's logit: a softmax cancels it, sigmoid scores and sparsemixer's masks do not
        "router_shift": layout.n_experts > 0 and layout.arch.router_scores == "softmax",
        "append_vocabulary": True,
        "reorder_vocabulary": True,
    }
    return rules[name]


def valid_attacks(layout: Layout) -> list[str]:
    """Names of the attacks in ATTACKS that preserve the function of models with `layout`."""
    return [name for name in ATTACKS if is_valid(name, layout)]


def residual_attack(layout: Layout):
    """The strongest residual-stream rewrite valid for `layout` (rotation, else a permutation)."""
    return rotation if is_valid("rotation", layout) else residual_permutation


def attack_directory(source, target, name: str, seed: int = 0) -> Path:
    """Apply attack `name` (a key of ATTACKS, or several joined by "+") to the checkpoint in `source`, write to `target`."""
    checkpoint = read_checkpoint(source)
    layout = layout_of(checkpoint.config)
    parts = name.split("+")
    for part in parts:
        if part not in ATTACKS:
            raise HurefError(f"unknown attack {part!r}; known: {', '.join(ATTACKS)}")
        if not is_valid(part, layout):
            raise HurefError(f"attack {part!r} does not preserve the function of a {layout.model_type} model")
    generator = torch.Generator().manual_seed(seed)
    return write_checkpoint(compose(*(ATTACKS[p] for p in parts))(checkpoint, generator), target)
