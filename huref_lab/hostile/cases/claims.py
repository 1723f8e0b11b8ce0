"""Cases on what config.json claims: depths, expert counts and per-layer lists far beyond the tensors
present (which must be refused before anything is built per layer or per expert), and the newer
config fields (hybrid layer kinds, multimodal wrappers) of the wrong JSON type."""

from __future__ import annotations

import json
from pathlib import Path

from huref.config import MAX_SIZE  # the largest size huref takes from a config or metadata
from huref_lab.hostile.cases.base import TOKENS, Case, case, invariants_run
from huref_lab.hostile.forgers import copy_model, edit_json



def run(command: str, model: Path, kit, directory: Path) -> Case:
    """`huref COMMAND MODEL` (invariants: with an output that must not be left; compare and lineage:
    against the tiny llama)."""
    if command == "invariants":
        return invariants_run(model, directory)
    return Case([command, str(model), str(kit.llama), "--json", *TOKENS])


def claim_case(name: str, klass: str, model: str = "llama", command: str = "invariants", drop=(), **changes):
    """`huref COMMAND` of a copy of kit's `model` whose config.json has `changes` (keys in `drop` removed)."""
    @case(name, klass)
    def build(kit, directory):
        copy = copy_model(getattr(kit, model), directory)
        config = json.loads((copy / "config.json").read_text())
        config = {key: value for key, value in {**config, **changes}.items() if key not in drop}
        (copy / "config.json").write_text(json.dumps(config))
        return run(command, copy, kit, directory)


# --- claimed sizes ---

for _command in ("invariants", "compare", "lineage"):
    claim_case(f"layers_16m_{_command}", "claimed sizes", command=_command, num_hidden_layers=MAX_SIZE)
claim_case("layers_100k_lineage", "claimed sizes", command="lineage", num_hidden_layers=100_000)
claim_case("layers_one_beyond_lineage", "claimed sizes", command="lineage", num_hidden_layers=4)
claim_case("recurrent_gemma_layers_16m", "claimed sizes", "recurrent_gemma", num_hidden_layers=MAX_SIZE)
claim_case("recurrent_gemma_layers_16m_lineage", "claimed sizes", "recurrent_gemma", "lineage",
           num_hidden_layers=MAX_SIZE)
claim_case("nemotron_h_pattern_100k", "claimed sizes", "nemotron_h", drop=("layers_block_type",),
           hybrid_override_pattern="M*-" * 33_334)
claim_case("nemotron_h_pattern_1m_lineage", "claimed sizes", "nemotron_h", "lineage", drop=("layers_block_type",),
           hybrid_override_pattern="M*E" * 333_334)
claim_case("nemotron_h_block_types_100k", "claimed sizes", "nemotron_h",
           layers_block_type=["linear_attention", "full_attention", "mlp"] * 33_334)
claim_case("nemotron_h_block_types_100k_lineage", "claimed sizes", "nemotron_h", "lineage",
           layers_block_type=["full_attention", "moe"] * 50_000)
for _command in ("invariants", "compare", "lineage"):
    claim_case(f"experts_16m_{_command}", "claimed sizes", "mixtral", _command, num_local_experts=MAX_SIZE)

# --- newer config fields of the wrong JSON type ---

for _name, _value in {"number": 5, "true": True, "string": "mamba", "numbers": [1, 2, 3, 4, 5, 6, 7],
                      "lists": [["mamba"]] * 7, "object": {"a": 1}, "mixed": ["full_attention", 1, "mlp"] * 2 + ["moe"]}.items():
    claim_case(f"nemotron_h_block_type_{_name}", "config types", "nemotron_h", layers_block_type=_value)
claim_case("nemotron_h_pattern_number", "config types", "nemotron_h", drop=("layers_block_type",),
           hybrid_override_pattern=5)
claim_case("nemotron_h_pattern_list", "config types", "nemotron_h", drop=("layers_block_type",),
           hybrid_override_pattern=list("M*EM*-*"))
claim_case("recurrent_gemma_block_types_string", "config types", "recurrent_gemma", block_types="attention")
claim_case("recurrent_gemma_block_types_number", "config types", "recurrent_gemma", block_types=7)


def wrapper_case(name: str, wrapper_type, text_type="llama", klass: str = "config types", expect: int = 2):
    """A multimodal wrapper (llava) around the tiny llama's config as its text_config, the
    wrapper's and the text config's model_type as given."""
    @case(name, klass)
    def build(kit, directory):
        copy = copy_model(kit.llama, directory)
        text = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({"model_type": wrapper_type,
                                                      "text_config": {**text, "model_type": text_type}}))
        return invariants_run(copy, directory, expect)


wrapper_case("wrapper_is_read", "llava", None, "valid inputs", expect=0)
wrapper_case("wrapper_model_type_list", ["llava"], None)
wrapper_case("wrapper_model_type_object", {"llava": 1}, None)
wrapper_case("wrapper_model_type_number", 5, None)
wrapper_case("wrapper_text_model_type_list", "llava", ["llama"])
wrapper_case("wrapper_text_model_type_object", "llava", {"llama": 1})


@case("wrapper_quantization_config_list", "config types")
def _(kit, directory):
    copy = copy_model(kit.llama, directory)
    edit_json(copy / "config.json", text_config=json.loads((copy / "config.json").read_text()),
              model_type="llava", quantization_config=[1])
    return invariants_run(copy, directory)
