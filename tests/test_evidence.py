"""A small, fast slice of scripts/experiments.py (huref_lab.experiments): the claim of docs/RESULTS.md, checked in CI.

One tiny llama base is trained from scratch on real text (Python standard library sources), then
fine-tuned on other text; an independent base gets its own tokenizer, seed and files. The
fine-tuned copy must keep a clearly higher ICS with its base than the independent base has.
"""

import math
from pathlib import Path

import pytest
import torch

from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.sources import load_model
from huref_lab.experiments import corpora, train_lm, zoo
from huref_lab.experiments import zoo_similarity as zs

SIZE = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, context=64)
STEPS = 40
DOC_CHARS = 6000  # each training file cut to its start, to keep the slice fast


def _base(seed: int, documents: list[str], directory: Path) -> Path:
    tokenizer = train_lm.train_tokenizer(documents, 512)
    model = train_lm.build_lm("llama", tokenizer.get_vocab_size(), SIZE, seed)
    train_lm.train(model, train_lm.encode(tokenizer, documents), STEPS, seed, 3e-3, 8, SIZE["context"], warmup=10)
    return train_lm.save(model, tokenizer, directory, {"seed": seed})


@pytest.fixture(scope="module")
def zoo_dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evidence")
    documents = [d[:DOC_CHARS] for d in corpora.load("python", "train")]
    base = _base(1, corpora.shuffled(documents, 1)[:40], root / "base")
    independent = _base(2, corpora.shuffled(documents, 2)[:40], root / "independent")
    model, tokenizer, _ = train_lm.load(base)
    other_text = [d[:DOC_CHARS] for d in corpora.load("python", "heldout")[:30]]
    ids = train_lm.encode(tokenizer, other_text)
    before = train_lm.heldout_loss(model, tokenizer, "\n".join(other_text)[:20000], SIZE["context"])["loss"]
    train_lm.train(model, ids, STEPS, 3, 1e-3, 8, SIZE["context"], warmup=5)
    after = train_lm.heldout_loss(model, tokenizer, "\n".join(other_text)[:20000], SIZE["context"])["loss"]
    finetuned = train_lm.save(model, tokenizer, root / "finetuned", {"loss_before": before, "loss_after": after})
    return {"base": base, "independent": independent, "finetuned": finetuned, "losses": (before, after)}


@pytest.fixture(scope="module")
def terms(zoo_dirs):
    return {name: invariant_terms(load_model(str(zoo_dirs[name])), layers=[0, 1], n_tokens=512)
            for name in ("base", "independent", "finetuned")}


def test_finetune_really_changed_the_model(zoo_dirs):
    before, after = zoo_dirs["losses"]
    assert after < before - 0.05
    base = train_lm.load(zoo_dirs["base"])[0].state_dict()
    tuned = train_lm.load(zoo_dirs["finetuned"])[0].state_dict()
    relative = max(float((tuned[k] - base[k]).norm() / base[k].norm()) for k in base if "layers" in k)
    assert relative > 0.01


def test_same_base_ics_clearly_above_independent(terms):
    related = compare_terms(terms["base"], terms["finetuned"])
    unrelated = compare_terms(terms["base"], terms["independent"])
    assert unrelated["n_common"] >= 64
    assert related["ics"] < 0.9999           # the fine-tune moved the terms too
    assert related["ics"] > unrelated["ics"] + 0.3
    assert abs(unrelated["ics"]) < 0.5


def test_ics_is_the_mean_of_per_term_cosines(terms):
    for other in ("finetuned", "independent"):
        assert zs.check_against_engine(terms["base"], terms[other]) < 1e-6


def test_first_tokens_equals_asking_for_fewer_tokens(zoo_dirs, terms):
    fewer = invariant_terms(load_model(str(zoo_dirs["base"])), layers=[0, 1], n_tokens=100)
    prefix = zs.first_tokens(terms["base"], 100)
    assert prefix.tokens == fewer.tokens
    torch.testing.assert_close(prefix.values, fewer.values, rtol=1e-4, atol=1e-4)


def test_weight_edits(zoo_dirs):
    model = train_lm.load(zoo_dirs["base"])[0]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    zoo.magnitude_prune(model, 0.2)
    for name, p in model.named_parameters():
        if p.dim() == 2 and "layers" in name:
            assert 0.2 <= float((p == 0).float().mean()) < 0.25
    model.load_state_dict(original)
    zoo.int8_round_trip(model)
    for name, p in model.named_parameters():
        rows = original[name].view(original[name].shape[0], -1) if p.dim() > 1 else original[name].view(1, -1)
        step = rows.abs().amax(1, keepdim=True) / 127
        error = (p.view_as(rows) - rows).abs()
        assert bool((error <= step / 2 + 1e-7).all()) and float(error.max()) > 0


def _probe_ids(tokenizer):
    return train_lm.encode(tokenizer, [d[:DOC_CHARS] for d in corpora.load("python", "heldout")[:10]])


def test_width_pruning_at_full_width_equals_zeroing_the_dropped_heads_and_neurons(zoo_dirs):
    model, tokenizer, _ = train_lm.load(zoo_dirs["base"])
    importance = zoo.minitron_importance(model, _probe_ids(tokenizer), SIZE["context"], batch=4)
    ffn = SIZE["ffn"] * 3 // 4
    pruned = zoo.width_prune(model, importance, SIZE["hidden"], ffn)
    assert pruned.config.num_attention_heads == model.config.num_key_value_heads
    # reference: the parent with the dropped query heads' and neurons' write columns zeroed
    _, heads, neurons = importance
    group, head_dim = model.config.num_attention_heads // model.config.num_key_value_heads, model.config.head_dim
    with torch.no_grad():
        for k, layer in enumerate(model.model.layers):
            kept = heads[k].view(-1, group).argmax(1) + torch.arange(heads[k].numel() // group) * group
            for h in set(range(heads[k].numel())) - set(kept.tolist()):
                layer.self_attn.o_proj.weight[:, h * head_dim:(h + 1) * head_dim] = 0
            layer.mlp.down_proj.weight[:, neurons[k].topk(SIZE["ffn"] - ffn, largest=False).indices] = 0
    x = torch.randint(0, tokenizer.get_vocab_size(), (2, 16))
    torch.testing.assert_close(pruned(input_ids=x).logits, model(input_ids=x).logits, rtol=1e-4, atol=1e-4)


def test_width_pruned_model_is_narrower_and_cross_terms_refuse_it(zoo_dirs):
    from huref.errors import HurefError
    from huref.lineage import cross_depth_terms

    model, tokenizer, _ = train_lm.load(zoo_dirs["base"])
    pruned = zoo.width_prune(model, zoo.minitron_importance(model, _probe_ids(tokenizer), SIZE["context"], batch=4),
                             SIZE["hidden"] * 3 // 4, SIZE["ffn"] // 2)
    assert pruned.model.embed_tokens.weight.shape == (tokenizer.get_vocab_size(), SIZE["hidden"] * 3 // 4)
    directory = train_lm.save(pruned, tokenizer, Path(zoo_dirs["base"]).parent / "pruned", {})
    with pytest.raises(HurefError, match="hidden size"):
        cross_depth_terms(load_model(str(directory)), load_model(str(zoo_dirs["base"])), n_tokens=64)


def test_upcycled_moe_computes_the_dense_model_and_huref_maps_it_layer_by_layer(zoo_dirs, tmp_path):
    from huref.lineage import layer_map, whole_depth_terms

    model, tokenizer, _ = train_lm.load(zoo_dirs["base"])
    moe = zoo.upcycle(model, n_experts=4, top_k=2, seed=3)
    assert moe.config.model_type == "mixtral" and moe.model.layers[0].mlp.gate.weight.std() > 0
    x = torch.randint(0, tokenizer.get_vocab_size(), (2, 16))
    torch.testing.assert_close(moe(input_ids=x).logits, model(input_ids=x).logits, rtol=1e-4, atol=1e-4)
    directory = train_lm.save(moe, tokenizer, tmp_path / "moe", {})
    similarity = layer_map(whole_depth_terms(load_model(str(zoo_dirs["base"])), n_tokens=128),
                           whole_depth_terms(load_model(str(directory)), n_tokens=128))
    assert float(similarity.diagonal().min()) > 0.999


def test_merge_methods_against_their_definitions():
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    torch.testing.assert_close(zoo.merge_linear([a, b], [1.0, 3.0]), 0.25 * a + 0.75 * b)
    # SLERP of unit vectors at angle theta: the unit vector at angle t * theta
    theta, t = 1.1, 0.3
    start, end = torch.tensor([1.0, 0.0]), torch.tensor([math.cos(theta), math.sin(theta)])
    torch.testing.assert_close(zoo.merge_slerp(start, end, t), torch.tensor([math.cos(t * theta), math.sin(t * theta)]))
    torch.testing.assert_close(zoo.merge_slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear
    # TIES on deltas [4, -1, 2, 0.5] and [-3, 2, 1, -0.2], density 0.5: trimmed [4, 0, 2, 0] and [-3, 2, 0, 0];
    # elected signs + + + +; agreeing means 4, 2, 2, 0 (nothing agrees on the last entry: it stays)
    base = torch.tensor([1.0, 1.0, 1.0, 1.0])
    merged = zoo.merge_ties(base, [base + torch.tensor([4.0, -1, 2, 0.5]), base + torch.tensor([-3.0, 2, 1, -0.2])],
                            [1.0, 1.0], density=0.5)
    torch.testing.assert_close(merged, base + torch.tensor([4.0, 2.0, 2.0, 0.0]))


def test_distilling_from_itself_costs_nothing(zoo_dirs):
    import copy

    model, tokenizer, _ = train_lm.load(zoo_dirs["base"])
    curve = train_lm.train(model, _probe_ids(tokenizer), 1, 0, 1e-3, 2, SIZE["context"], teacher=copy.deepcopy(model))
    assert abs(curve[0][1]) < 1e-5
    other = train_lm.load(zoo_dirs["independent"])[0]
    assert train_lm.train(model, _probe_ids(tokenizer), 1, 0, 1e-3, 2, SIZE["context"], teacher=other)[0][1] > 0.1
