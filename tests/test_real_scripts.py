"""The pieces of huref_lab.experiments.real_models and .real_lineage that work without the real weights:
adding vocabulary before continued pretraining, the relation of two derived models, the verdict
thresholds drawn in the null-panel picture."""

import pytest
import torch

from huref.statistics import ALPHA_SAME_BASE, ALPHA_UNRELATED, null_panel, statistic_at, verdict_from_statistic
from huref_lab.experiments import real_lineage, real_models
from huref_lab.experiments.separation import held_out_verdicts


def test_added_tokens_start_as_the_mean_of_their_pieces_and_leave_old_logits(tiny_zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tiny_zoo("llama")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    vocab = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    words = [f"{vocab[5]} {vocab[9]}", f"{vocab[11]} {vocab[3]} {vocab[7]}"]
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    old_rows = model.get_input_embeddings().weight.detach().clone()
    inputs = torch.tensor([[5, 9, 11, 3, 7, 2]])
    with torch.no_grad():
        old_logits = model(inputs).logits

    real_models.add_vocabulary(model, tokenizer, words)

    embedding = model.get_input_embeddings().weight.detach()
    assert embedding.shape[0] == old_rows.shape[0] + 2
    assert torch.equal(embedding[: old_rows.shape[0]], old_rows)
    for k, ids in enumerate(pieces):
        assert len(ids) > 1
        assert torch.allclose(embedding[old_rows.shape[0] + k], old_rows[ids].mean(0))
        assert tokenizer(words[k], add_special_tokens=False)["input_ids"] == [old_rows.shape[0] + k]
    with torch.no_grad():
        new_logits = model(inputs).logits
    assert torch.allclose(new_logits[..., : old_rows.shape[0]], old_logits, atol=1e-5)


@pytest.mark.parametrize("a, b, same_base, training, text", [
    ("smollm2.gguf", "smollm2-vim.q8", True, True, "B = smollm2.gguf + dequantized + fine-tuned + Q8_0"),
    ("smollm2-vim.q4", "smollm2-python.st", True, True, "A = smollm2.st + fine-tuned + Q4_0; B = smollm2.st + CPT+vocab"),
    ("smollm2-vim.q4", "smollm2-vim.st", True, False, "A = smollm2-vim.st + Q4_0"),
    ("smollm2-pruned", "gemma3-vim.st", False, False, "other family"),
    ("gemma3.gguf", "minilm.st", False, False, "other family"),
])
def test_relation_follows_the_derivation_tree(a, b, same_base, training, text):
    assert real_lineage.relation(a, b) == {"same_base": same_base, "training": training, "text": text}


def test_statistic_at_has_the_verdicts_p_value():
    panel = null_panel()
    for alpha in (ALPHA_SAME_BASE, ALPHA_UNRELATED):
        x = statistic_at(panel, alpha)
        assert verdict_from_statistic(x, panel)["p_value"] == pytest.approx(alpha, rel=1e-6)
    assert statistic_at(panel) == statistic_at(panel, ALPHA_SAME_BASE) > statistic_at(panel, ALPHA_UNRELATED)


def test_held_out_panels_leave_out_every_pair_of_the_judged_families():
    """An unrelated pair far above the rest is judged against the pairs of the other families only
    (so it stands out), while in the other pairs' panels it widens the spread."""
    singles = [f"{f}1" for f in "bcdefgh"]
    family = {name: name[0] for name in singles + ["a1", "a2"]}
    rows = [dict(a="a1", b="a2", label="same-base", s=0.9), dict(a="a1", b="b1", label="unrelated", s=0.5)]
    rows += [dict(a=x, b=y, label="unrelated", s=0.01 * (k % 5))
             for k, (x, y) in enumerate((x, y) for i, x in enumerate(singles) for y in singles[i + 1:])]
    found = held_out_verdicts(rows, "s", family)
    assert found["counts"]["same-base"] == {"same-base": 1, "inconclusive": 0, "unrelated": 0}
    assert found["counts"]["unrelated"] == {"same-base": 1, "inconclusive": 0, "unrelated": 21}
    assert [(m["a"], m["b"], m["verdict"]) for m in found["misses"]] == [("a1", "b1", "same-base")]
