"""Function-preserving attacks on every tiny architecture: logits unchanged, weights moved, ICS unchanged.

Each attack of huref_lab.attacks.ATTACKS runs alone on the few tiny models that together show every value
of the layout facts its code reads (`exercising_models`), and every tiny model gets the composite of all
the attacks valid for it. The attacked checkpoint is loaded with transformers and run on the same text
(tokenized by each side's own tokenizer.json): its logits must equal the original's to 1e-4 once the
vocabulary columns are matched by token string. The weights must have moved (and the parameter cosine
PCS dropped), and the invariant terms must not: ICS >= 0.999.
Independently initialised models must give |ICS| <= 0.1.
HUREF_ATTACK_CASES=all runs every valid attack alone on every tiny model instead (the cross product).
"""

import functools
import json
import os

import pytest
import torch
import transformers
from tokenizers import Tokenizer

from huref.errors import HurefError
from huref.invariants import invariant_terms
from huref.similarity import compare_terms, pcs
from huref.sources import load_model
from huref_lab import attacks, tiny_models

LOGIT_TOLERANCE = 1e-4
MIN_ICS_UNDER_ATTACK = 0.999
MAX_ABS_ICS_INDEPENDENT = 0.1
ATTACK_SEED = 1
EVERY_MODEL = os.environ.get("HUREF_ATTACK_CASES") == "all"

transformers.logging.set_verbosity_error()


@functools.cache
def layout(arch):
    return attacks.layout_of(tiny_models.make_config(arch).to_dict())


@functools.cache
def facts(arch) -> dict:
    return attacks.layout_facts(layout(arch))


def valid_models(name) -> list[str]:
    """The tiny models whose function attack `name` preserves (its rule holds)."""
    return [arch for arch in tiny_models.ARCHITECTURES if attacks.is_valid(name, layout(arch))]


def composite(arch):
    """Every attack valid for `arch`, "+"-joined in ATTACKS order."""
    return "+".join(attacks.valid_attacks(layout(arch)))


def features(arch, names) -> set:
    """(fact, value) for each of the layout facts `names` of tiny model `arch`; a set-valued fact gives one
    pair per feature it holds, or (fact, None) when it holds none."""
    shown = set()
    for name in names:
        value = facts(arch)[name]
        if isinstance(value, frozenset):
            shown |= {(name, feature) for feature in value} or {(name, None)}
        else:
            shown.add((name, value))
    return shown


def exercising_models(name) -> list[str]:
    """The tiny models attack `name` runs alone on: of those it is valid for, greedily the one showing the most
    (fact, value) pairs of the facts it reads (its rule's `reads`) not shown yet (ties: ARCHITECTURES order),
    until every pair those models show is shown."""
    valid = valid_models(name)
    shown = {arch: features(arch, attacks.ATTACKS[name].reads) for arch in valid}
    missing = set().union(*shown.values())
    chosen = []
    while missing:
        arch = max(valid, key=lambda a: len(shown[a] & missing))
        chosen.append(arch)
        missing -= shown[arch]
    return chosen


def models_for(name) -> list[str]:
    """The models attack `name` runs alone on: `exercising_models`, or with HUREF_ATTACK_CASES=all every valid one."""
    return valid_models(name) if EVERY_MODEL else exercising_models(name)


def case(arch, attack=None):
    """A pytest case for (arch, attack) with the id "arch-attack"."""
    values = [arch] if attack is None else [arch, attack]
    return pytest.param(*values, id="-".join(values))


# each attack alone on its models, then every model's composite ("all")
CASES = [case(arch, name) for name in attacks.ATTACKS for arch in models_for(name)]
CASES += [case(arch, "all") for arch in tiny_models.ARCHITECTURES]


def load_torch_model(path, arch):
    return tiny_models.model_class(arch).from_pretrained(path, dtype=torch.float32).eval()


@functools.cache
def sample_text(seed=0):
    """Two lines of 24 words from the tiny vocabulary (never the unknown token)."""
    words = tiny_models.token_strings()
    return [" ".join(words[i] for i in row) for row in tiny_models.sample_ids(seed=seed).tolist()]


def run(path, arch):
    """(logits [2, 24, vocab], token string -> id) of the checkpoint in `path` on `sample_text()`."""
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    ids = torch.tensor([e.ids for e in tokenizer.encode_batch(sample_text())])
    with torch.no_grad():
        logits = load_torch_model(path, arch)(input_ids=ids).logits
    return logits, attacks.vocabulary(json.loads((path / "tokenizer.json").read_text()))


class Reference:
    """The original tiny checkpoint of one architecture with its logits, vocabulary, tensors and terms."""

    def __init__(self, path, arch):
        self.path = path
        self.logits, self.vocab = run(path, arch)
        self.tensors = attacks.read_checkpoint(path).tensors
        self.model = load_model(str(path))
        self.terms = invariant_terms(self.model)


@pytest.fixture(scope="session")
def reference(tiny_zoo):
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = Reference(tiny_zoo(arch), arch)
        return cache[arch]
    return get


def logit_difference(ref: Reference, path, arch) -> float:
    """Max |logit difference| on the sample text, vocabulary columns matched by token string."""
    logits, vocab = run(path, arch)
    strings = sorted(ref.vocab, key=ref.vocab.get)
    columns = torch.tensor([vocab[s] for s in strings])
    return float((logits[..., columns] - ref.logits).abs().max())


def weights_moved(before: dict, after: dict) -> bool:
    """Some same-named tensor changed shape or moved: cosine < 0.99 or relative distance > 0.1."""
    for name, a in before.items():
        b = after.get(name)
        if b is None or b.shape != a.shape:
            return True
        a, b = a.double().reshape(-1), b.double().reshape(-1)
        if float(a @ b) < 0.99 * float(a.norm() * b.norm()) or float((a - b).norm()) > 0.1 * float(a.norm()):
            return True
    return False


@pytest.mark.parametrize("arch,attack", CASES)
def test_attack_preserves_logits_and_invariants(arch, attack, reference, tmp_path):
    if attack == "all":
        attack = composite(arch)
    ref = reference(arch)
    attacked = attacks.attack_directory(ref.path, tmp_path / "attacked", attack, seed=ATTACK_SEED)

    assert logit_difference(ref, attacked, arch) <= LOGIT_TOLERANCE
    assert weights_moved(ref.tensors, attacks.read_checkpoint(attacked).tensors)
    model = load_model(str(attacked))
    parameter_cosine = pcs(ref.model, model, list(range(tiny_models.N_LAYERS)))
    if "+" in attack:   # a composite moves every layer: the paper's naive baseline must see it
        assert parameter_cosine < 0.9
    elif attack != "append_vocabulary":   # alone, it only changes tensors whose shape changes
        assert parameter_cosine < 0.995
    result = compare_terms(ref.terms, invariant_terms(model))
    assert result["n_common"] == len(ref.terms.tokens)
    assert result["ics"] >= MIN_ICS_UNDER_ATTACK, result


def test_every_attack_runs_alone_on_models_showing_each_fact_it_reads():
    """Each attack is valid for some tiny model and runs alone on models it is valid for that show every value
    of the facts it reads: rotation on both norm kinds and on transposed fused QKV (gpt2's Conv1D c_attn)."""
    for name, attack in attacks.ATTACKS.items():
        valid, chosen = valid_models(name), exercising_models(name)
        assert chosen and set(chosen) <= set(valid), name
        assert set().union(*(features(a, attack.reads) for a in chosen)) == \
            set().union(*(features(a, attack.reads) for a in valid)), name
    rotation = [facts(arch) for arch in exercising_models("rotation")]
    assert {"rms", "layer"} <= {kind for f in rotation for kind in f["input norms"]}
    assert any(("q", "qkv_split", True) in f["attention storage"] for f in rotation)


@pytest.mark.parametrize("arch", [case(arch) for arch in tiny_models.ARCHITECTURES])
def test_independent_initialisations_are_unrelated(arch, reference, tiny_zoo):
    other = invariant_terms(load_model(str(tiny_zoo(arch, seed=7))))
    assert abs(compare_terms(reference(arch).terms, other)["ics"]) <= MAX_ABS_ICS_INDEPENDENT


# Attacks outside their validity rules: the rules are needed, and the logit check can fail.
INVALID = [("gemma2", "rotation"), ("bloom", "head_permutation"), ("qwen3", "qk_transform"),
           ("gpt2", "ffn_scale"), ("llama", "mean_shift"), ("bert", "rotation"), ("gpt_oss", "ffn_scale"),
           ("qwen3_next", "vo_transform"), ("kolibri1_1", "head_permutation")]


@pytest.mark.parametrize("arch,attack", INVALID, ids=[f"{a}-{n}" for a, n in INVALID])
def test_invalid_attacks_are_refused_and_would_change_the_logits(arch, attack, reference, tmp_path):
    ref = reference(arch)
    assert not attacks.is_valid(attack, layout(arch))
    with pytest.raises(HurefError):
        attacks.attack_directory(ref.path, tmp_path / "refused", attack)
    forced = attacks.ATTACKS[attack](attacks.read_checkpoint(ref.path), torch.Generator().manual_seed(ATTACK_SEED))
    assert logit_difference(ref, attacks.write_checkpoint(forced, tmp_path / "forced"), arch) > 1e-2


@pytest.mark.parametrize("arch", ["gpt2", "olmo"])
def test_a_large_mean_shift_keeps_invariants(arch, reference, tmp_path):
    """Shifts of 1000x the embedding's spread along the all-ones vector: float32 LayerNorms still give the
    same logits to 1e-3 (of logits about 1.5); the invariant terms must not lose more than that."""
    ref = reference(arch)
    shifted = attacks.mean_shift(attacks.read_checkpoint(ref.path), torch.Generator().manual_seed(ATTACK_SEED),
                                 magnitude=1000.0)
    path = attacks.write_checkpoint(shifted, tmp_path / "shifted")
    assert logit_difference(ref, path, arch) <= 1e-3
    assert compare_terms(ref.terms, invariant_terms(load_model(str(path))))["ics"] >= MIN_ICS_UNDER_ATTACK


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_every_attack_then_bfloat16_storage_keeps_invariants(arch, reference, tmp_path):
    """What an attacker would publish: all valid attacks composed, then the weights rounded to bfloat16
    (logits move by ~1e-2 from the rounding alone; the invariant terms must barely move)."""
    ref = reference(arch)
    attacked = attacks.compose(*(attacks.ATTACKS[n] for n in attacks.valid_attacks(layout(arch))))(
        attacks.read_checkpoint(ref.path), torch.Generator().manual_seed(ATTACK_SEED))
    path = attacks.write_checkpoint(attacked, tmp_path / "bf16", dtype=torch.bfloat16)
    assert compare_terms(ref.terms, invariant_terms(load_model(str(path))))["ics"] >= MIN_ICS_UNDER_ATTACK


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_renamed_token_strings_keep_invariants(arch, reference, tmp_path):
    """A rotation, then every vocabulary string renamed by a letter bijection that the tokenizer's normaliser
    applies to the text and its decoder undoes: same ids for the same text, same decoded text, same logits."""
    ref = reference(arch)
    generator = torch.Generator().manual_seed(ATTACK_SEED)
    residual = attacks.residual_attack(layout(arch))
    renamed = attacks.rename_token_strings(residual(attacks.read_checkpoint(ref.path), generator), generator)
    path = attacks.write_checkpoint(renamed, tmp_path / "renamed")
    before, after = (Tokenizer.from_file(str(d / "tokenizer.json")) for d in (ref.path, path))
    encoded = [before.encode_batch(sample_text()), after.encode_batch(sample_text())]
    assert [e.ids for e in encoded[0]] == [e.ids for e in encoded[1]]
    assert [before.decode(e.ids) for e in encoded[0]] == [after.decode(e.ids) for e in encoded[1]] == sample_text()
    assert set(attacks.vocabulary(renamed.tokenizer)).isdisjoint(set(ref.vocab) - {"[UNK]"})
    ids = torch.tensor([e.ids for e in encoded[0]])
    with torch.no_grad():
        logits = load_torch_model(path, arch)(input_ids=ids).logits
    assert float((logits - ref.logits).abs().max()) <= LOGIT_TOLERANCE
    assert compare_terms(ref.terms, invariant_terms(load_model(str(path))))["ics"] >= MIN_ICS_UNDER_ATTACK


def test_rotation_is_orthogonal_and_keeps_the_ones_direction_for_layernorm():
    generator = torch.Generator().manual_seed(0)
    T = attacks.orthogonal_fixing_ones(48, generator)
    assert torch.allclose(T @ T.T, torch.eye(48, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(T @ torch.ones(48, dtype=torch.float64), torch.ones(48, dtype=torch.float64), atol=1e-12)
    assert (T - torch.eye(48, dtype=torch.float64)).abs().max() > 0.1


def test_rope_commuting_map_commutes_with_every_rotary_position():
    lay = layout("phi")   # partial rotary: 8 of 16 dims, rotate_half pairs
    M = attacks.rope_commuting_matrix(lay, torch.Generator().manual_seed(0))
    half = lay.rotary_dim // 2
    for position in (1, 5, 17):
        angles = position * 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
        rope = torch.eye(lay.head_dim, dtype=torch.float64)
        index = torch.arange(half)
        rope[index, index] = rope[index + half, index + half] = torch.cos(angles)
        rope[index, index + half], rope[index + half, index] = -torch.sin(angles), torch.sin(angles)
        assert torch.allclose(M @ rope, rope @ M, atol=1e-12)
    assert torch.linalg.cond(M) < 100


@pytest.mark.parametrize("arch", ["llama", "gpt2", "olmo2"])
def test_vocabulary_attacks_keep_most_of_a_small_token_selection(arch, reference, tmp_path):
    """With fewer probe tokens than the vocabulary, appended tokens may displace a few selected ones;
    the two sides must still share most keys and agree on them."""
    ref = reference(arch)
    name = attacks.residual_attack(layout(arch)).__name__ + "+reorder_vocabulary+append_vocabulary"
    attacked = attacks.attack_directory(ref.path, tmp_path / "attacked", name, seed=ATTACK_SEED)
    n_tokens = 64
    result = compare_terms(invariant_terms(ref.model, n_tokens=n_tokens),
                           invariant_terms(load_model(str(attacked)), n_tokens=n_tokens))
    assert result["n_common"] >= 0.75 * n_tokens
    assert result["ics"] >= MIN_ICS_UNDER_ATTACK


def test_reordering_a_vocabulary_with_colliding_token_keys(tmp_path):
    """Token strings "\u2581w" and "\u0120w" share the selection key " w"; reordering the vocabulary
    must not change which embedding row stands for that key."""
    vocab = tiny_models.token_strings()
    for k in range(10):
        word = vocab[10 + 2 * k]
        vocab[10 + 2 * k], vocab[11 + 2 * k] = "\u2581" + word, "\u0120" + word
    original = tiny_models.save_checkpoint(tiny_models.build_model("llama"), tmp_path / "original", vocab)
    terms = invariant_terms(load_model(str(original)))
    for seed in range(3):
        attacked = attacks.attack_directory(original, tmp_path / f"reordered{seed}", "reorder_vocabulary", seed=seed)
        assert compare_terms(terms, invariant_terms(load_model(str(attacked))))["ics"] >= MIN_ICS_UNDER_ATTACK


def test_reordering_keeps_special_token_ids_on_the_same_strings(tiny_zoo, tmp_path):
    original = tiny_zoo("llama")
    reordered = attacks.attack_directory(original, tmp_path / "reordered", "reorder_vocabulary", seed=ATTACK_SEED)
    strings = {i: s for s, i in attacks.vocabulary(json.loads((original / "tokenizer.json").read_text())).items()}
    new_ids = attacks.vocabulary(json.loads((reordered / "tokenizer.json").read_text()))
    for file in ("config.json", "generation_config.json"):
        before, after = (json.loads((d / file).read_text()) for d in (original, reordered))
        for key in ("bos_token_id", "eos_token_id"):
            assert after[key] == new_ids[strings[before[key]]]
        assert (before["bos_token_id"], before["eos_token_id"]) != (after["bos_token_id"], after["eos_token_id"])


def fuse_experts(checkpoint, layout):
    """The checkpoint with each MoE layer's per-expert matrices stacked as transformers 5 holds them in
    memory: mlp.experts.gate_up_proj [E, 2 * inner, hidden] (each expert's gate rows, then its up rows)
    and mlp.experts.down_proj [E, hidden, inner]."""
    tensors = dict(checkpoint.tensors)
    for i in range(layout.n_layers):
        prefix = f"model.layers.{i}.mlp.experts."
        if f"{prefix}0.up_proj.weight" not in tensors:
            continue
        pop = [{sub: tensors.pop(f"{prefix}{e}.{sub}_proj.weight") for sub in ("gate", "up", "down")}
               for e in range(layout.n_experts)]
        tensors[prefix + "gate_up_proj"] = torch.stack([torch.cat([p["gate"], p["up"]]) for p in pop])
        tensors[prefix + "down_proj"] = torch.stack([p["down"] for p in pop])
    return attacks.Checkpoint(tensors, checkpoint.config, checkpoint.tokenizer, checkpoint.extras)


def test_fused_3d_experts_are_attacked_as_their_per_expert_matrices(tiny_zoo):
    """Every valid attack on a qwen3_moe checkpoint whose experts are fused 3-D tensors gives the fused
    form of the same attack on the per-expert checkpoint (same seed): the split/join through
    huref.layers.LAYOUTS' expert row maps loses nothing and addresses the same matrices."""
    lay = layout("qwen3_moe")
    original = attacks.read_checkpoint(tiny_zoo("qwen3_moe"))
    attack = attacks.compose(*(attacks.ATTACKS[n] for n in attacks.valid_attacks(lay)))
    per_expert = attack(original, torch.Generator().manual_seed(ATTACK_SEED))
    fused = attack(fuse_experts(original, lay), torch.Generator().manual_seed(ATTACK_SEED))
    expected = fuse_experts(per_expert, lay).tensors
    assert any(name.endswith("experts.gate_up_proj") for name in fused.tensors)
    assert sorted(fused.tensors) == sorted(expected)
    for name, value in expected.items():
        assert torch.equal(fused.tensors[name], value), name
