"""Multimodal checkpoints: huref fingerprints the language model inside (config.json's text_config, the
language model's tensors under the wrapper's prefix). A tiny VLM, built from transformers' config classes
with a tiny vision tower, and the same language-model weights saved as a plain causal LM give the same terms."""

import pytest
import torch
import transformers

from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.sources import language_model_config, load_model
from huref_lab import tiny_models

TEXT = dict(vocab_size=tiny_models.VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14)


def vlm_config(kind: str):
    if kind == "llava":
        return transformers.LlavaConfig(text_config=transformers.LlamaConfig(**TEXT),
                                        vision_config=transformers.CLIPVisionConfig(**VISION), image_token_index=383)
    if kind == "gemma3":
        return transformers.Gemma3Config(text_config=transformers.Gemma3TextConfig(head_dim=16, **TEXT),
                                         vision_config=transformers.SiglipVisionConfig(**VISION),
                                         mm_tokens_per_image=4, image_token_index=383)
    if kind == "llama4":   # a MoE language model, saved under language_model.model. (tensors of its own tiny model)
        vision = transformers.Llama4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=28, patch_size=14,
                                                 vision_output_dim=32, projector_input_dim=32, projector_output_dim=32)
        return transformers.Llama4Config(text_config=tiny_models.make_config("llama4_text"), vision_config=vision,
                                         image_token_index=383)
    if kind == "qwen3_5":   # a hybrid language model: gated delta-net layers between attention layers
        text = dict(TEXT, head_dim=16, linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                    linear_value_head_dim=16, layer_types=["full_attention", "linear_attention", "full_attention"])
        return transformers.Qwen3_5Config(text_config=text, vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14))
    return transformers.Mistral3Config(text_config=transformers.MistralConfig(**TEXT),
                                       vision_config=transformers.PixtralVisionConfig(**VISION), image_token_index=383)


@pytest.mark.parametrize("kind", ["llava", "gemma3", "mistral3", "qwen3_5", "llama4"])
def test_the_language_model_of_a_vlm_is_the_plain_causal_lm(kind, tmp_path):
    torch.manual_seed(0)
    config = vlm_config(kind)
    vlm = transformers.AutoModelForImageTextToText.from_config(config).eval()
    with torch.no_grad():   # norm gains away from their neutral value, so that reading them matters
        for name, p in vlm.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape))
    plain = transformers.AutoModelForCausalLM.from_config(config.text_config).eval()
    if kind == "llama4":   # Llama4ForConditionalGeneration holds a whole causal LM
        plain.load_state_dict(vlm.language_model.state_dict())
    else:
        plain.model.load_state_dict(vlm.model.language_model.state_dict())
        plain.lm_head.load_state_dict(vlm.lm_head.state_dict())
    vocab = tiny_models.token_strings()
    vlm_dir = tiny_models.save_checkpoint(vlm, tmp_path / "vlm", vocab)
    plain_dir = tiny_models.save_checkpoint(plain, tmp_path / "plain", vocab)

    vlm_model = load_model(str(vlm_dir))
    assert vlm_model.config["model_type"] == config.text_config.model_type
    assert any(vlm_model.prefix.startswith(p) for p in ("language_model.", "model.language_model."))
    a, b = invariant_terms(vlm_model), invariant_terms(load_model(str(plain_dir)))
    assert torch.equal(a.values, b.values)
    assert compare_terms(a, b)["ics"] >= 1 - 1e-6


def test_text_config_model_type_defaults_as_transformers_does():
    config = {"model_type": "gemma3", "text_config": {"hidden_size": 8}, "quantization_config": {"quant_method": "fp8"}}
    text = language_model_config(config)
    assert text["model_type"] == transformers.Gemma3Config().text_config.model_type == "gemma3_text"
    assert text["quantization_config"] == {"quant_method": "fp8"}
    assert language_model_config({"model_type": "llama"}) == {"model_type": "llama"}
