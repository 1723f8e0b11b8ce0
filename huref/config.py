"""config.json read as typed values: every value huref takes from a config (or from metadata
turned into one: GGUF, quantization_config) goes through `config_value`, `config_ints` or
`config_object` here, so a value of the wrong JSON type, not an integer, not finite or out of
range is one clear error naming its key.

What is read here: the sizes an architecture declares (`model_dims`, `latent_dims`), which layers
are attention layers and where each takes its FFN term (`LayerKinds`, hybrid and single-block
models: `layer_plan`, one linear pass), and the language model's config inside a multimodal
wrapper (`language_model_config`). A claimed depth is checked against the tensors present
(`check_depth`) before anything is built per layer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from huref.architectures import ArchSpec, LayerKinds, arch_for_config
from huref.errors import HurefError, excerpt


@dataclass(frozen=True)
class Dims:
    """The sizes an architecture's config declares."""

    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    n_experts: int


# config.json keys of the norm epsilon, in the order they are looked for
EPS_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "norm_epsilon")


MAX_SIZE = 1 << 24  # no size a config declares (layers, heads, widths, experts) is near this


def config_value(config: dict, *keys: str, default=None, kind: type | None = None, low: float | None = None,
                 high: float | None = None, where: str = "config.json"):
    """The value of the first of `keys` that config.json sets (not null), else `default`.

    With `kind` the value found is checked: `int` takes a JSON integer (not a boolean, not 2.0),
    `float` any finite number, `str` a string; numbers must lie in [low, high]. Anything else is
    a one-line HurefError naming the key (and `where` it was read), so a config's types are settled
    where they are read.
    """
    for key in keys:
        if config.get(key) is not None:
            return _checked(key, config[key], kind, low, high, where)
    return default


def _checked(key: str, value, kind: type | None, low, high, where: str):
    if kind is None:
        return value
    if kind is int:
        ok = type(value) is int
    elif kind is float:
        ok = type(value) in (int, float) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if ok and kind in (int, float):
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        shown = excerpt(value)
        wanted = {int: "an integer", float: "a finite number", str: "a string"}.get(kind, kind.__name__)
        bounds = f" in [{low}, {high}]" if kind in (int, float) and (low, high) != (None, None) else ""
        raise HurefError(f"{where}: {key} is {shown}, not {wanted}{bounds}")
    return float(value) if kind is float else value


def config_ints(config: dict, key: str, length: int | None = None, low: int | None = None, high: int | None = None,
                where: str = "config.json") -> tuple[int, ...] | None:
    """The list of integers config.json sets under `key` (None when it is not set or null), each
    an integer in [low, high] as `config_value` checks one, `length` of them when given."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or (length is not None and len(value) != length):
        wanted = f"a list of {length} integers" if length is not None else "a list of integers"
        raise HurefError(f"{where}: {key} is {excerpt(value)}, not {wanted}")
    return tuple(_checked(f"{key}[{i}]", item, int, low, high, where) for i, item in enumerate(value))


def config_object(config: dict, key: str, where: str = "config.json") -> dict:
    """The object config.json sets under `key` ({} when it is not set or null)."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HurefError(f"{where}: {key} is {excerpt(value)}, not an object")
    return value


def model_dims(config: dict, arch: ArchSpec | None = None) -> Dims:
    """Read hidden size, layer and head counts, norm epsilon and expert count from a config dict
    (`arch`: its ArchSpec, by default `arch_for_config(config)`, which may fix the key/value heads)."""
    arch = arch or arch_for_config(config)
    config = arch.settings(config)
    size = dict(kind=int, low=1, high=MAX_SIZE)
    hidden = config_value(config, "hidden_size", "n_embd", "d_model", **size)
    n_layers = config_value(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers", **size)
    if n_layers is None and arch.layer_kinds is not None and arch.layer_kinds.key is not None:
        listed = layer_kind_list(config, arch.layer_kinds)   # nemotron_h saves only its list of block kinds
        n_layers = len(listed) if listed else None
    n_heads = config_value(config, "num_attention_heads", "n_head", "num_heads", "n_heads", **size)
    if None in (hidden, n_layers, n_heads):
        raise HurefError("config.json lacks the hidden size, layer count or head count")
    n_kv = arch.n_kv_heads or config_value(config, "num_key_value_heads", "num_kv_heads", "n_head_kv", "kv_n_heads",
                                           default=n_heads, **size)
    head_dim = config_value(config, "head_dim", "kv_channels", default=hidden // n_heads, **size)
    if min(hidden, n_layers, n_heads, n_kv, head_dim) <= 0 or n_heads % n_kv:
        raise HurefError("config.json declares inconsistent sizes (heads, key/value heads, hidden size)")
    eps = arch.layer_norm_eps or config_value(config, *EPS_KEYS, default=1e-5, kind=float, low=0.0)
    n_experts = config_value(config, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts",
                             default=0, kind=int, low=0, high=MAX_SIZE)
    return Dims(hidden, n_layers, n_heads, n_kv, head_dim, eps, n_experts)


def layer_kind_list(config: dict, kinds: LayerKinds) -> list | None:
    """The per-layer kinds config.json lists under `kinds.key` (strings, or integers where the
    kinds are integers: llama4's no_rope_layers), else the string under `kinds.pattern` read one
    character per layer (nemotron_h's hybrid_override_pattern); None when neither is there. A
    value of another JSON type, or longer than MAX_SIZE, raises a one-line HurefError."""
    listed = config.get(kinds.key)
    if listed is None and kinds.pattern:
        pattern = config_value(config, kinds.pattern, kind=str)
        if pattern is None:
            return None
        chars = dict(kinds.chars)
        if len(pattern) > MAX_SIZE or not set(pattern) <= chars.keys():
            raise HurefError(f"config.json's {kinds.pattern} should hold at most {MAX_SIZE} of the characters "
                             f"{''.join(chars)}")
        return [chars[c] for c in pattern]
    entry = type(kinds.attention[0])
    if listed is not None and not (isinstance(listed, list) and len(listed) <= MAX_SIZE
                                   and all(type(kind) is entry for kind in listed)):
        raise HurefError(f"config.json: {kinds.key} is {excerpt(listed)}, not a list of "
                         f"{'strings' if entry is str else 'integers'}, one per layer")
    return listed


def attention_layers(config: dict, arch: ArchSpec, n_layers: int) -> tuple[int, ...]:
    """The layers whose token mixer is attention (all but a hybrid model's mixer layers), as
    config.json says through `arch.layer_kinds`; bad or missing values raise a one-line HurefError."""
    return picked_layers(config, arch.layer_kinds, n_layers)


def qk_norm_layers(config: dict, arch: ArchSpec, n_layers: int) -> tuple[int, ...]:
    """The attention layers whose queries and keys go through the row's QK norms (llama4: its RoPE
    layers only; none without QK norms)."""
    if not arch.q_norm:
        return ()
    picked = set(picked_layers(config, arch.qk_norm_layers, n_layers))
    return tuple(i for i in attention_layers(config, arch, n_layers) if i in picked)


def picked_layers(config: dict, kinds: LayerKinds | None, n_layers: int) -> tuple[int, ...]:
    """The layers a `LayerKinds` picks from config.json (None: all); bad values raise a one-line HurefError."""
    if kinds is None:
        return tuple(range(n_layers))
    if kinds.key is not None and kinds.skip_every is not None and not layer_kind_list(config, kinds):
        every = config_value(config, kinds.skip_every, default=kinds.defaults[0], kind=int, low=1, high=MAX_SIZE)
        return tuple(i for i in range(n_layers) if (i + 1) % every)
    if kinds.key is not None and (kinds.indices is None or layer_kind_list(config, kinds) is not None):
        listed = layer_kind_list(config, kinds)
        if kinds.cycle and isinstance(listed, list) and listed:
            listed = [listed[i % len(listed)] for i in range(n_layers)]
        if not isinstance(listed, list) or len(listed) != n_layers:
            raise HurefError(f"config.json's {kinds.key} should list the kind of each of the {n_layers} layers")
        return tuple(i for i, kind in enumerate(listed) if kind in kinds.attention)
    if kinds.indices is not None:
        listed = config
        for part in kinds.indices.split("."):   # a dotted path into nested dicts
            listed = listed.get(part) if isinstance(listed, dict) else None
        first = kinds.first_index
        if not isinstance(listed, list) or not all(type(i) is int and first <= i < n_layers + first for i in listed):
            raise HurefError(f"config.json's {kinds.indices} should list attention layer indices from {first} "
                             f"to {n_layers - 1 + first}")
        return tuple(sorted({i - first for i in listed}))
    period = config_value(config, kinds.period, default=kinds.defaults[0], kind=int, low=1, high=MAX_SIZE)
    offset = config_value(config, kinds.offset, default=kinds.defaults[1], kind=int, low=0, high=MAX_SIZE)
    if offset >= period:
        raise HurefError(f"config.json's {kinds.period} and {kinds.offset} should be integers, 0 <= offset < period")
    return tuple(i for i in range(n_layers) if i % period == offset)


LAYER_NUMBER = r"(0|[1-9][0-9]{0,7})"  # a layer index as tensor names spell it (below 10^8 > MAX_SIZE)


def check_depth(n_layers: int, names, layer: str, where: str) -> None:
    """Refuse a depth the checkpoint's tensors do not back: each layer index below n_layers must
    name a tensor under `layer` (the full name of layer {i}'s prefix, "model.layers.{i}."), so that
    nothing built per layer is sized by a claim alone. One pass over the names; `where`: the
    model, for the message."""
    before, _, after = layer.partition("{i}")
    pattern = re.compile(re.escape(before) + LAYER_NUMBER + re.escape(after))
    present = set()
    for name in names:
        match = pattern.match(name)
        if match and int(match.group(1)) < n_layers:
            present.add(int(match.group(1)))
    if len(present) < n_layers:
        first_missing = next((i for i, found in enumerate(sorted(present)) if i != found), len(present))
        raise HurefError(f"{where}: its config declares {n_layers} layers, but the checkpoint holds tensors of {len(present)} "
                         f"(none of layer {first_missing}: '{before}{first_missing}{after}...')")


def kv_sources(config: dict, arch: ArchSpec, n_layers: int) -> tuple[int, ...]:
    """For each layer, the layer whose keys and values it attends to: itself, or with `arch.kv_sources` the one
    config.json lists for it (or transformers' default layout when the list is missing, `KVSources`); bad values
    raise a one-line HurefError."""
    sources = arch.kv_sources
    if sources is None:
        return tuple(range(n_layers))
    listed = config.get(sources.key)
    if listed is None:
        kinds = sources.layers if config.get(sources.layers.key) is not None else sources.default_layers
        picked = picked_layers(config, kinds, n_layers)
        if len(picked) > len(sources.default):
            raise HurefError(f"config.json lacks {sources.key}, whose default layout covers {len(sources.default)} "
                             f"layers of this kind, not {len(picked)}")
        listed = list(range(n_layers))
        for layer, position in zip(picked, sources.default):
            listed[layer] = picked[position]
    if not (isinstance(listed, list) and len(listed) == n_layers and all(type(j) is int for j in listed)
            and all(0 <= j <= k and listed[j] == j for k, j in enumerate(listed))):
        raise HurefError(f"config.json's {sources.key} should list, for each of the {n_layers} layers, itself or "
                         "an earlier layer that reads its own keys and values")
    return tuple(listed)


def ffn_blocks(config: dict, arch: ArchSpec, attention: tuple[int, ...], n_layers: int) -> dict[int, int | None]:
    """For each attention layer i, the layer holding its FFN: i itself, or for single-block layers
    (`LayerKinds.ffn_kinds`, nemotron_h) the first FFN block after i (None: no FFN block follows);
    one backward pass over the layers."""
    kinds = arch.layer_kinds
    if kinds is None or not kinds.ffn_kinds:
        return {i: i for i in attention}
    listed = layer_kind_list(config, kinds)  # checked by attention_layers: one kind per layer
    following, next_ffn = [None] * n_layers, None
    for j in range(n_layers - 1, -1, -1):
        following[j] = next_ffn  # the first FFN block after j
        if listed[j] in kinds.ffn_kinds:
            next_ffn = j
    return {i: following[i] for i in attention}


@dataclass(frozen=True)
class LayerPlan:
    """Which layers carry terms, as config.json says: the attention layers, the layer holding each
    one's FFN (`ffn_blocks`), the attention layers with QK norms (`qk_norm_layers`) and, per layer,
    the layer whose keys and values it attends to (`kv_sources`)."""

    attention: tuple[int, ...]
    ffn_block: dict[int, int | None]
    qk_norm: frozenset[int]
    kv_source: tuple[int, ...]

    @property
    def term_layers(self) -> tuple[int, ...]:
        """The layers that carry the three terms: the attention layers that have an FFN."""
        return tuple(i for i in self.attention if self.ffn_block[i] is not None)


def layer_plan(config: dict, arch: ArchSpec, n_layers: int) -> LayerPlan:
    """The `LayerPlan` of a model of n_layers layers (linear in n_layers); bad values raise a one-line HurefError."""
    attention = attention_layers(config, arch, n_layers)
    return LayerPlan(attention, ffn_blocks(config, arch, attention, n_layers),
                     frozenset(qk_norm_layers(config, arch, n_layers)), kv_sources(config, arch, n_layers))


@dataclass(frozen=True)
class LatentDims:
    """Multi-head latent attention sizes: q latent rank (0: no q latent), kv latent rank, per-head
    non-rotary and rotary query/key dims, per-head value dim."""

    q_rank: int
    kv_rank: int
    nope: int
    rope: int
    v: int


def latent_dims(config: dict) -> LatentDims:
    """The MLA sizes config.json declares (q_lora_rank null or 0: queries in one matrix)."""
    keys = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    if any(config.get(key) is None for key in keys):
        raise HurefError(f"config.json lacks the latent attention sizes ({', '.join(keys)})")
    sizes = [config_value(config, "q_lora_rank", default=0, kind=int, low=0, high=MAX_SIZE) or 0] + [
        config_value(config, key, kind=int, low=0, high=MAX_SIZE) for key in keys]
    if min(sizes[1:3] + sizes[4:]) <= 0:
        raise HurefError("config.json declares inconsistent latent attention sizes")
    return LatentDims(*sizes)


# Multimodal checkpoints: the language model's config is config.json's text_config; where that
# lacks a model_type, transformers' default text model for the wrapper's model_type.
TEXT_MODEL_TYPES = {"llava": "llama", "llava_next": "llama", "mistral3": "mistral", "idefics3": "llama",
                    "gemma3": "gemma3_text", "qwen2_vl": "qwen2_vl_text", "qwen2_5_vl": "qwen2_5_vl_text",
                    "llama4": "llama4_text", "qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text",
                    "fuyu": "persimmon", "got_ocr2": "qwen2", "moss_transcribe_diarize": "qwen3",
                    "emu3": "emu3_text_model"}


def language_model_config(config: dict) -> dict:
    """The config of the language model huref fingerprints: a multimodal config.json's `text_config`
    (model_type filled in as transformers does, quantization_config carried over), else `config`."""
    text = config_object(config, "text_config")
    if not text:
        return config
    wrapper = config_value(config, "model_type", kind=str)
    own = config_value(text, "model_type", kind=str, where="config.json: text_config")
    text = {**text, "model_type": own or TEXT_MODEL_TYPES.get(wrapper)}
    if "quantization_config" in config:
        text.setdefault("quantization_config", config["quantization_config"])
    return text
