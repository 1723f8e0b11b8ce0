"""Multimodal checkpoints: huref fingerprints the language model inside (config.json's text_config, the
language model's tensors under the wrapper's prefix). A tiny VLM, built from transformers' config classes
with a tiny vision tower, and the same language-model weights saved as a plain causal LM give the same terms."""

import pytest
import torch
import transformers

from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.config import language_model_config
from huref.sources import load_model
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
    if kind == "fuyu":   # persimmon, image patches projected linearly into the embedding rows
        return transformers.FuyuConfig(text_config=transformers.PersimmonConfig(**dict(TEXT, num_key_value_heads=4)),
                                       image_size=28, patch_size=14, image_token_id=383)
    if kind == "got_ocr2":
        return transformers.GotOcr2Config(text_config=transformers.Qwen2Config(**TEXT), vision_config=dict(
            hidden_size=32, output_channels=16, num_hidden_layers=1, num_attention_heads=2, image_size=32,
            patch_size=16, window_size=2, global_attn_indexes=[0], mlp_dim=64), image_token_index=383)
    if kind == "moss_transcribe_diarize":   # an audio tower in front of qwen3
        return transformers.MossTranscribeDiarizeConfig(
            text_config=transformers.Qwen3Config(head_dim=16, **TEXT), audio_token_id=383,
            audio_config=dict(num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, hidden_size=32,
                              num_mel_bins=16, max_source_positions=16))
    if kind == "emu3":   # image tokens in the vocabulary, a VQ-VAE beside the text model (model.text_model.)
        image_tokens = {"<image>": 383, "<|extra_200|>": 382, **{f"<|visual token{i:06d}|>": 366 + i for i in range(16)}}
        return transformers.Emu3Config(text_config=dict(TEXT, pad_token_id=0), vocabulary_map=image_tokens, vq_config=dict(
            embed_dim=8, codebook_size=16, latent_channels=8, base_channels=32, channel_multiplier=[1, 1],
            num_res_blocks=1, attn_resolutions=[]))
    return transformers.Mistral3Config(text_config=transformers.MistralConfig(**TEXT),
                                       vision_config=transformers.PixtralVisionConfig(**VISION), image_token_index=383)


@pytest.mark.parametrize("kind", ["llava", "gemma3", "mistral3", "qwen3_5", "llama4", "fuyu", "got_ocr2",
                                  "moss_transcribe_diarize", "emu3"])
def test_the_language_model_of_a_vlm_is_the_plain_causal_lm(kind, tmp_path):
    torch.manual_seed(0)
    config = vlm_config(kind)
    auto = transformers.AutoModelForCausalLM if kind == "moss_transcribe_diarize" else transformers.AutoModelForImageTextToText
    vlm = auto.from_config(config).eval()
    with torch.no_grad():   # norm gains away from their neutral value, so that reading them matters
        for name, p in vlm.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape))
    plain = tiny_models.new_model(config.text_config.model_type, config.text_config).eval()
    if kind == "llama4":   # Llama4ForConditionalGeneration holds a whole causal LM
        plain.load_state_dict(vlm.language_model.state_dict())
    else:
        language = vlm.model.text_model if kind == "emu3" else vlm.model.language_model
        plain.model.load_state_dict(language.state_dict())
        plain.lm_head.load_state_dict(vlm.lm_head.state_dict())
    vocab = tiny_models.token_strings()
    vlm_dir = tiny_models.save_checkpoint(vlm, tmp_path / "vlm", vocab)
    plain_dir = tiny_models.save_checkpoint(plain, tmp_path / "plain", vocab)

    vlm_model = load_model(str(vlm_dir))
    assert vlm_model.config["model_type"] == config.text_config.model_type
    assert any(vlm_model.prefix.startswith(p) for p in ("language_model.", "model.language_model.", "text_model."))
    a, b = invariant_terms(vlm_model), invariant_terms(load_model(str(plain_dir)))
    assert torch.equal(a.values, b.values)
    assert compare_terms(a, b)["ics"] >= 1 - 1e-6


def test_text_config_model_type_defaults_as_transformers_does():
    config = {"model_type": "gemma3", "text_config": {"hidden_size": 8}, "quantization_config": {"quant_method": "fp8"}}
    text = language_model_config(config)
    assert text["model_type"] == transformers.Gemma3Config().text_config.model_type == "gemma3_text"
    assert text["quantization_config"] == {"quant_method": "fp8"}
    assert language_model_config({"model_type": "llama"}) == {"model_type": "llama"}
