"""Tiny random checkpoints, one per supported architecture, built with transformers from a config.

Every model is float32, 3 layers, hidden size 64 (4 query heads of 16, 2 key/value heads where the
architecture has grouped-query attention), a 384-token vocabulary, and MoE layers with 4 experts.
Variants of one model_type have their own entries: falcon_gqa (new_decoder_architecture, grouped KV)
beside falcon (multi-query, parallel), qwen2_moe_dense (its middle layer keeps a dense FFN, as
qwen3_moe's does), gpt_bigcode_mha (per-head fused c_attn beside the multi-query default),
phi_qk_layernorm (phi with its per-head QK LayerNorms), cohere2_moe_rms (RMSNorms, sigmoid router, no
shared expert, beside LayerNorms, softmax and a shared expert). Hybrid models (qwen3_next, qwen3_5_text,
qwen3_5_moe_text, granitemoehybrid, bamba, lfm2, lfm2_moe, jamba, kimi_linear, minimax, lara_mini) have 4
layers, attention on layers 0 and 2; recurrent_gemma on 1 and 3, olmo_hybrid on 0-2 under a delta-net
layer, nemotron_h has 7 single blocks (see its entry).
Norm gains and every bias get random non-trivial values, so that norm folding and bias handling
matter. Each checkpoint is saved in Hugging Face layout (config.json + model.safetensors) together
with a word-level tokenizer.json over a synthetic vocabulary of distinct strings.
"""

import json
import random
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from huref.architectures import PLUS_ONE_KINDS, arch_for_config

transformers.logging.disable_progress_bar()

VOCAB_SIZE = 384
N_LAYERS = 3
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
FFN = 128

_LLAMA_LIKE = dict(
    vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
    num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128,
)

# QK-norm, post-norm and embedding-norm models: a norm divides out a rescaling of the matrix before it only up to its
# epsilon, which would be comparable to the tiny models' small activations (olmo2's queries read the raw
# residual); real models have eps << the mean square. A small eps keeps those attacks exact in float32.
_SMALL_EPS = 1e-10

# model_type -> config keyword arguments (on top of transformers' defaults for that model_type)
CONFIGS = {
    "llama": dict(_LLAMA_LIKE, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "mistral": dict(_LLAMA_LIKE, sliding_window=None, tie_word_embeddings=False),
    "mixtral": dict(_LLAMA_LIKE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                    tie_word_embeddings=False),
    "qwen2": dict(_LLAMA_LIKE, tie_word_embeddings=True),
    "qwen2_moe": dict(_LLAMA_LIKE, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                      num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
                      tie_word_embeddings=False),
    "qwen2_moe_dense": dict(_LLAMA_LIKE, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                            num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[1],
                            tie_word_embeddings=False),
    "qwen3": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, tie_word_embeddings=True, rms_norm_eps=_SMALL_EPS),
    "qwen3_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                      decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    # multi-head latent attention: q latent 24, kv latent 16, per head 8 non-rotary + 4 rotary query/key
    # dims and 12 value dims; the first layer dense, then 4 routed experts and a shared one
    "deepseek_v3": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                        qk_rope_head_dim=4, v_head_dim=12, moe_intermediate_size=32, n_routed_experts=4,
                        num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=2,
                        topk_group=1, tie_word_embeddings=False),
    # no q latent (q_proj, as DeepSeek-V2-Lite), softmax router
    "deepseek_v2": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=None, kv_lora_rank=16,
                        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12, moe_intermediate_size=32,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                        tie_word_embeddings=False),
    # deepseek_v3's attention and experts; dense/sparse layers listed in mlp_layer_types
    "glm4_moe_lite": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=24, kv_lora_rank=16,
                          qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12, moe_intermediate_size=32,
                          n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                          mlp_layer_types=["dense", "sparse", "sparse"], tie_word_embeddings=False),
    # deepseek_v2's latent attention with RoPE on halves, dense FFNs, scale_emb / scale_depth / dim_model_base
    # multipliers (transformers' defaults 12, 1.4, 256), tied head
    "minicpm3": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                     qk_rope_head_dim=4, v_head_dim=12, tie_word_embeddings=True),
    # deepseek_v3's latent attention in llama layers with dense FFNs
    "youtu": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                  qk_rope_head_dim=4, v_head_dim=12, tie_word_embeddings=False),
    # read by transformers as deepseek_v3 (no q latent here, as the released checkpoints)
    "sarvam_mla": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8,
                       qk_rope_head_dim=4, v_head_dim=12, moe_intermediate_size=32, n_routed_experts=4,
                       num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                       tie_word_embeddings=False),
    # deepseek_v3 with DeepSeek sparse attention: an indexer of 2 heads of 8 picks 4 keys per query (fewer than
    # the test text's 24 tokens, so the choice matters)
    "deepseek_v32": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                         qk_rope_head_dim=4, v_head_dim=12, moe_intermediate_size=32, n_routed_experts=4,
                         num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                         index_topk=4, index_n_heads=2, index_head_dim=8, tie_word_embeddings=False),
    # glm's sparse attention: the last layer reuses the previous layer's choice of keys (no indexer of its own)
    "glm_moe_dsa": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                        qk_rope_head_dim=4, v_head_dim=12, moe_intermediate_size=32, n_routed_experts=4,
                        num_experts_per_tok=2, n_shared_experts=1, mlp_layer_types=["dense", "sparse", "sparse"],
                        n_group=1, topk_group=1, index_topk=4, index_n_heads=2, index_head_dim=8,
                        indexer_types=["full", "full", "shared"], tie_word_embeddings=False),
    # attention sinks, q/k/v/o biases, sliding-window layers between full ones, 4 experts stored
    # [expert, in, out] with interleaved gate/up, their biases, a router bias, a clamped SwiGLU
    "gpt_oss": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                    sliding_window=8, tie_word_embeddings=False),
    # granite(moe) with sinks: multipliers away from 1, a sliding-window layer, layer 1 without RoPE and layer 2
    # with another RoPE base; granitemoe_swa with a shared MLP
    "granite_swa": dict(_LLAMA_LIKE, embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.4,
                        logits_scaling=8.0, sliding_window=8,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                        layer_rope_theta=[10000.0, 0, 500000.0], tie_word_embeddings=False),
    "granitemoe_swa": dict(_LLAMA_LIKE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                           shared_intermediate_size=48, embedding_multiplier=12.0, residual_multiplier=0.22,
                           attention_multiplier=0.4, logits_scaling=8.0, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           layer_rope_theta=[10000.0, 0, 500000.0], tie_word_embeddings=False),
    # sinks, per-head QK norms, RoPE on the sliding-window layers 0 and 2 only, sigmoid router, ungated shared
    # expert, layer 1 dense
    "flint": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                  num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[1], sliding_window=8,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                  rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    # hybrids, 4 layers: attention on layers 0 and 2, the top layer not attention
    # gated delta-net between gated full-attention layers; routed experts + shared one, layer 2 dense
    "qwen3_next": dict(_LLAMA_LIKE, num_hidden_layers=4, head_dim=HEAD_DIM, moe_intermediate_size=32,
                       shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
                       mlp_only_layers=[2], linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8,
                       linear_value_head_dim=8,
                       layer_types=["full_attention", "linear_attention", "full_attention", "linear_attention"],
                       tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    # (delta-net heads of 16: with 8 the float32 forward itself strays 6e-5 from float64)
    "qwen3_5_text": dict(_LLAMA_LIKE, num_hidden_layers=4, head_dim=HEAD_DIM, linear_num_value_heads=4,
                         linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
                         layer_types=["full_attention", "linear_attention", "full_attention", "linear_attention"],
                         tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    "qwen3_5_moe_text": dict(_LLAMA_LIKE, num_hidden_layers=4, head_dim=HEAD_DIM, moe_intermediate_size=32,
                             shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2,
                             linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8,
                             linear_value_head_dim=8,
                             layer_types=["full_attention", "linear_attention", "full_attention", "linear_attention"],
                             tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    # attention and Mamba-2 side by side in every layer, with scalar multipliers away from 1
    "falcon_h1": dict(_LLAMA_LIKE, mamba_n_heads=4, mamba_d_head=16, mamba_d_ssm=64, mamba_n_groups=1,
                      mamba_d_state=8, embedding_multiplier=3.0, attention_in_multiplier=0.5, key_multiplier=2.0,
                      attention_out_multiplier=1.3, ssm_out_multiplier=0.7, mlp_multipliers=[1.5, 0.8],
                      lm_head_multiplier=0.5, tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    # Mamba-2 between attention layers (layer_types as granite-4.0 spells them), fused experts with a shared
    # MLP, no RoPE, granite's embedding/attention/residual multipliers away from 1 (logits_scaling left at 1,
    # which keeps the logit check sharp)
    "granitemoehybrid": dict(_LLAMA_LIKE, num_hidden_layers=4, intermediate_size=32, shared_intermediate_size=48,
                             num_local_experts=4, num_experts_per_tok=2,
                             layer_types=["attention", "mamba", "attention", "mamba"], mamba_n_heads=4,
                             mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_expand=1,
                             embedding_multiplier=12.0, attention_multiplier=0.02, residual_multiplier=0.22,
                             tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    # Mamba-2 beside the attention layers listed in attn_layer_indices
    "bamba": dict(_LLAMA_LIKE, num_hidden_layers=4, attn_layer_indices=[0, 2], mamba_n_heads=4, mamba_d_head=16,
                  mamba_n_groups=1, mamba_d_state=8, mamba_expand=1, tie_word_embeddings=False,
                  rms_norm_eps=_SMALL_EPS),
    # short convolutions between attention layers with per-head QK norms; tied head
    "lfm2": dict(_LLAMA_LIKE, num_hidden_layers=4, layer_types=["full_attention", "conv", "full_attention", "conv"],
                 block_auto_adjust_ff_dim=False, norm_eps=_SMALL_EPS, tie_word_embeddings=True),
    # Mamba between attention layers (i % 2 == 0), experts on the attention layers, dense FFNs beside
    # Mamba; a small SSM state (its A_log and D would otherwise dominate the parameter cosine)
    "jamba": dict(_LLAMA_LIKE, num_hidden_layers=4, intermediate_size=32, attn_layer_period=2, attn_layer_offset=0,
                  expert_layer_period=2, expert_layer_offset=0, num_experts=4, num_experts_per_tok=2, mamba_d_state=2,
                  mamba_expand=1, tie_word_embeddings=False),
    # single blocks: Mamba-2, attention, MoE (routed + shared), attention, Mamba-2, MLP, attention. The
    # FFN terms of attention blocks 1 and 3 come from blocks 2 and 5; block 6 has no FFN after it
    "nemotron_h": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                       layers_block_type=["linear_attention", "full_attention", "moe", "full_attention",
                                          "linear_attention", "mlp", "full_attention"],
                       mamba_num_heads=4, mamba_head_dim=16, n_groups=1, ssm_state_size=8, expand=1,
                       n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                       moe_shared_expert_intermediate_size=48, n_group=1, topk_group=1,
                       layer_norm_epsilon=_SMALL_EPS, tie_word_embeddings=False),
    # lightning attention (blocks of 8 tokens) on layers 1 and 3 beside softmax attention on 0 and 2;
    # every alpha/beta residual factor away from 1
    "minimax": dict(_LLAMA_LIKE, num_hidden_layers=4, head_dim=HEAD_DIM, intermediate_size=32, num_local_experts=4,
                    num_experts_per_tok=2, block_size=8,
                    layer_types=["full_attention", "linear_attention", "full_attention", "linear_attention"],
                    full_attn_alpha_factor=1.7, full_attn_beta_factor=0.6, linear_attn_alpha_factor=0.8,
                    linear_attn_beta_factor=1.3, mlp_alpha_factor=1.2, mlp_beta_factor=0.7,
                    rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    # olmo2-style attention (post-norms) on layers 0-2 below a pre-norm gated delta-net layer (the delta-net's
    # norm gains and decay parameters would otherwise dominate the parameter cosine of the first 3 layers)
    "olmo_hybrid": dict(_LLAMA_LIKE, num_hidden_layers=4, num_key_value_heads=HEADS,
                        layer_types=["full_attention", "full_attention", "full_attention", "linear_attention"],
                        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                        linear_value_head_dim=16, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    # KDA layers 1 and 3 beside MLA (no q latent, no positions) on 0 and 2, given 1-based as the published
    # configs do; the first layer dense, then 4 sigmoid-routed experts and a shared one
    "kimi_linear": dict(_LLAMA_LIKE, num_hidden_layers=4, num_key_value_heads=HEADS, q_lora_rank=None,
                        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
                        moe_intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        first_k_dense_replace=1,
                        linear_attn_config={"full_attn_layers": [1, 3], "kda_layers": [2, 4], "head_dim": 16,
                                            "num_heads": 4, "short_conv_kernel_size": 4},
                        tie_word_embeddings=False),   # (the KDA output norm with eps 1e-10 amplifies float32 noise)
    # lfm2 with sigmoid-routed experts (and a choice-only expert bias) after one dense layer
    "lfm2_moe": dict(_LLAMA_LIKE, num_hidden_layers=4, layer_types=["full_attention", "conv", "full_attention", "conv"],
                     num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, num_dense_layers=1,
                     norm_eps=_SMALL_EPS, tie_word_embeddings=True),
    # gated delta-net on layers 1 and 3, full attention on 0, sliding-window attention on 2
    "lara_mini": dict(_LLAMA_LIKE, num_hidden_layers=4, head_dim=HEAD_DIM, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2,
                      linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                      linear_value_head_dim=16, sliding_window=8,
                      layer_types=["full_attention", "linear_attention", "sliding_attention", "linear_attention"],
                      tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    # block_types (recurrent, attention) cycled over 4 layers: attention on 1 and 3, one key/value head
    "recurrent_gemma": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=4,
                            num_attention_heads=HEADS, num_key_value_heads=1, lru_width=HIDDEN,
                            block_types=["recurrent", "attention"], attention_window_size=8,
                            partial_rotary_factor=0.5, rms_norm_eps=_SMALL_EPS),
    "gemma": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, hidden_act="gelu_pytorch_tanh"),
    "gemma2": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=8,
                   final_logit_softcapping=30.0, attn_logit_softcapping=50.0, rms_norm_eps=_SMALL_EPS),
    "gemma3_text": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=8,
                        sliding_window_pattern=2, rms_norm_eps=_SMALL_EPS),
    "phi": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, partial_rotary_factor=0.5,
                max_position_embeddings=128, tie_word_embeddings=False),
    "phi3": dict(_LLAMA_LIKE, partial_rotary_factor=0.5, tie_word_embeddings=False),
    "gpt2": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, n_positions=128),
    "gpt_neox": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN,
                     num_hidden_layers=N_LAYERS, num_attention_heads=HEADS, rotary_pct=0.5,
                     max_position_embeddings=128, use_parallel_residual=True, tie_word_embeddings=False),
    "gptj": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, rotary_dim=8,
                 n_positions=128, n_inner=FFN, tie_word_embeddings=False),
    "gpt_neo": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_layers=N_LAYERS, num_heads=HEADS,
                    intermediate_size=FFN, attention_types=[[["global", "local", "global"], 1]],
                    window_size=8, max_position_embeddings=128),
    "falcon": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
                   num_attention_heads=HEADS, new_decoder_architecture=False, multi_query=True,
                   parallel_attn=True, bias=False, alibi=False, tie_word_embeddings=True),
    "falcon_gqa": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
                       num_attention_heads=HEADS, num_kv_heads=KV_HEADS, new_decoder_architecture=True,
                       parallel_attn=True, bias=False, alibi=False, tie_word_embeddings=True),
    "opt": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, ffn_dim=FFN, num_hidden_layers=N_LAYERS,
                num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN, max_position_embeddings=128,
                do_layer_norm_before=True),
    "bloom": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, n_layer=N_LAYERS, n_head=HEADS,
                  layer_norm_epsilon=_SMALL_EPS),
    "starcoder2": dict(_LLAMA_LIKE, use_bias=True, sliding_window=None, tie_word_embeddings=True),
    "olmo": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, tie_word_embeddings=False),
    "olmo2": dict(_LLAMA_LIKE, num_key_value_heads=HEADS, tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    "stablelm": dict(_LLAMA_LIKE, partial_rotary_factor=0.25, use_qkv_bias=True, qk_layernorm=False,
                     use_parallel_residual=False, tie_word_embeddings=False),
    # emu3's language model (llama's layers; its vocabulary holds the image tokens); its config wants an int pad id
    "emu3_text_model": dict(_LLAMA_LIKE, pad_token_id=0, tie_word_embeddings=False),
    "internlm3": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, attention_bias=True, mlp_bias=True, tie_word_embeddings=False),
    "iquestcoder": dict(_LLAMA_LIKE, tie_word_embeddings=False),
    "cwm": dict(_LLAMA_LIKE, sliding_window=8, tie_word_embeddings=False),
    "ministral": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, sliding_window=8, tie_word_embeddings=False),
    "ministral3": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, tie_word_embeddings=False),
    "seed_oss": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, attention_bias=True, tie_word_embeddings=False),
    "smollm3": dict(_LLAMA_LIKE, no_rope_layers=[1, 0, 1], tie_word_embeddings=True),
    "granite": dict(_LLAMA_LIKE, embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.4,
                    logits_scaling=8.0, tie_word_embeddings=False),
    "helium": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, tie_word_embeddings=False),
    "ernie4_5": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, use_bias=True, tie_word_embeddings=True),
    "arcee": dict(_LLAMA_LIKE, tie_word_embeddings=False),
    "exaone": dict(_LLAMA_LIKE, tie_word_embeddings=False),
    "hyperclovax": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "glm": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, tie_word_embeddings=False),
    "glm4": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "hunyuan_v1_dense": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "apertus": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "apertus1p5_text": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "jais2": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, tie_word_embeddings=False),
    "olmo3": dict(_LLAMA_LIKE, sliding_window=8, tie_word_embeddings=False, rms_norm_eps=_SMALL_EPS),
    "exaone4": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, sliding_window=8, rms_norm_eps=_SMALL_EPS,
                    tie_word_embeddings=False),
    "vaultgemma": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=8),
    "gpt-sw3": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, n_positions=128),
    "phimoe": dict(_LLAMA_LIKE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                   tie_word_embeddings=False),
    "minimax_m2": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                       rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "olmoe": dict(_LLAMA_LIKE, intermediate_size=32, num_experts=4, num_experts_per_tok=2, rms_norm_eps=_SMALL_EPS,
                  tie_word_embeddings=False),
    "mellum": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                   rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "granitemoe": dict(_LLAMA_LIKE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                       embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.4,
                       logits_scaling=8.0, tie_word_embeddings=False),
    "granitemoeshared": dict(_LLAMA_LIKE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                             shared_intermediate_size=48, tie_word_embeddings=False),
    "glm4_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, n_routed_experts=4,
                     num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                     use_qk_norm=True, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "solar_open": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, n_routed_experts=4,
                       num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1, tie_word_embeddings=False),
    "exaone_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                       n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                       rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "ernie4_5_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, moe_num_experts=4, moe_k=2,
                         moe_num_shared_experts=1, moe_layer_start_index=1, use_bias=True, tie_word_embeddings=False),
    "hunyuan_v1_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, num_experts=4, moe_topk=2,
                           rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "hy_v3": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                  rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "cohere": dict(_LLAMA_LIKE, logit_scale=0.25, tie_word_embeddings=True),
    "cohere2": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, sliding_window=8, logit_scale=0.25, tie_word_embeddings=True),
    "nemotron": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, partial_rotary_factor=0.5, tie_word_embeddings=False),
    "mpt": dict(vocab_size=VOCAB_SIZE, d_model=HIDDEN, n_layers=N_LAYERS, n_heads=HEADS, expansion_ratio=2,
                max_seq_len=128),
    "gpt_bigcode": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, n_positions=128,
                        n_inner=FFN, multi_query=True),
    "gpt_bigcode_mha": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, n_positions=128,
                            n_inner=FFN, multi_query=False),
    "persimmon": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
                      num_attention_heads=HEADS, max_position_embeddings=128, qk_layernorm=True,
                      layer_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "phi_qk_layernorm": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=FFN,
                             num_hidden_layers=N_LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                             partial_rotary_factor=0.5, qk_layernorm=True, layer_norm_eps=_SMALL_EPS,
                             max_position_embeddings=128, tie_word_embeddings=False),
    "codegen": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, rotary_dim=8,
                    n_positions=128, n_inner=FFN, tie_word_embeddings=False),
    "openai-gpt": dict(vocab_size=VOCAB_SIZE, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=HEADS, n_positions=128),
    "nanochat": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "kolibri1": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                     shared_expert_intermediate_size=48, sliding_window=8, rms_norm_eps=_SMALL_EPS,
                     tie_word_embeddings=False),
    # kolibri1's layers (dense layer 0); sliding-window layer 0 with RoPE, indexed-attention layers 1 and 2 without
    # positions, layer 2 attending to layer 1's keys and values. Its indexer picks 4 keys per query (beside 1 sink
    # and 2 local tokens) from pools of 8 chosen by blocks of 4: on the 24-token test text both choices matter
    "kolibri1_1": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                       shared_expert_intermediate_size=48, mlp_only_layers=[0], mlp_only_intermediate_size=FFN,
                       layer_types=["sliding_attention", "indexed_attention", "indexed_attention"], sliding_window=8,
                       index_layers=[1], kv_source_layers=[0, 1, 1], index_topk=4, index_pool_size=8,
                       index_compression=4, index_num_heads=2, index_num_local_tokens=2, index_num_sink_tokens=1,
                       rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    "dots1": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
                  n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1, rms_norm_eps=_SMALL_EPS,
                  tie_word_embeddings=False),
    "flex_olmo": dict(_LLAMA_LIKE, intermediate_size=32, num_experts=4, num_experts_per_tok=2, rms_norm_eps=_SMALL_EPS,
                      tie_word_embeddings=False),
    "sarvam_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, n_routed_experts=4,
                       num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                       rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    # sarvam_moe's names and layers with param2moe's defaults: a tied head, two shared experts' width
    "param2moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, n_routed_experts=4,
                      num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1, n_group=1, topk_group=1,
                      rms_norm_eps=_SMALL_EPS, tie_word_embeddings=True),
    # qwen3_next's output gate (q_proj rows per head: query, then gate) without QK norms; layer 0 dense, then
    # sigmoid-routed experts in 2 groups (one group picked per token) beside a shared expert
    "minicpm5_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, moe_intermediate_size=32, n_routed_experts=4,
                         num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                         mlp_layer_types=["dense", "sparse", "sparse"], tie_word_embeddings=False),
    "cohere2_moe": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                        num_shared_experts=1, mlp_layer_types=["dense", "sparse", "sparse"],
                        prefix_dense_intermediate_size=FFN, sliding_window=8, logit_scale=0.25,
                        tie_word_embeddings=True),
    "cohere2_moe_rms": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                            mlp_layer_types=["sparse", "dense", "sparse"], prefix_dense_intermediate_size=FFN,
                            rms_norm_eps=1e-6, expert_selection_fn="sigmoid", sliding_window=8,
                            tie_word_embeddings=True),
    # experts as flat [experts * ffn, hidden] tensors (w2 holding each expert's [in, out]), fused Wqkv, sizes
    # in attn_config / ffn_config; clip_qkv as DBRX sets it (transformers 5.24 and 5.25 cannot run without one)
    "dbrx": dict(vocab_size=VOCAB_SIZE, d_model=HIDDEN, n_heads=HEADS, n_layers=N_LAYERS, max_seq_len=128,
                 attn_config=dict(kv_n_heads=KV_HEADS, clip_qkv=8.0, rope_theta=10000.0),
                 ffn_config=dict(ffn_hidden_size=32, moe_num_experts=4, moe_top_k=2), tie_word_embeddings=False),
    # experts stored [expert, in, out] beside two shared experts
    "aria_text": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, moe_num_experts=4, moe_topk=2,
                      moe_num_shared_experts=2, tie_word_embeddings=False),
    # experts stored [expert, in, out] with a shared expert on layers 0 and 2, a dense FFN on layer 1; layer 1
    # without RoPE or QK norm, its queries scaled by the temperature (floor_scale 8: from position 7 on);
    # parameter-free QK norms on layers 0 and 2
    "llama4_text": dict(_LLAMA_LIKE, head_dim=HEAD_DIM, intermediate_size=32, intermediate_size_mlp=FFN,
                        num_local_experts=4, num_experts_per_tok=2, moe_layers=[0, 2], no_rope_layers=[1, 0, 1],
                        floor_scale=8, attn_scale=0.5, rms_norm_eps=_SMALL_EPS, tie_word_embeddings=False),
    # mixture of attention heads: 4 attention experts of 2 query heads each over 2 shared key/value heads
    "jetmoe": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS, num_key_value_heads=KV_HEADS,
                   kv_channels=HEAD_DIM, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                   max_position_embeddings=128, tie_word_embeddings=False),
    "bert": dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
                 num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=128),
}

ARCHITECTURES = tuple(CONFIGS)
# config.json model_type of each entry: variants of one model_type get their own entry
VARIANT_OF = {"falcon_gqa": "falcon", "qwen2_moe_dense": "qwen2_moe", "gpt_bigcode_mha": "gpt_bigcode",
              "phi_qk_layernorm": "phi", "cohere2_moe_rms": "cohere2_moe"}
MODEL_TYPE = {name: VARIANT_OF.get(name, name) for name in CONFIGS}


def make_config(name: str, **overrides):
    """The transformers config of tiny model `name` (a key of CONFIGS), float32: its CONFIGS keywords over the
    shared defaults (initializer range, bos/eos/pad ids), then `overrides`."""
    kwargs = dict(dict(initializer_range=0.05, bos_token_id=1, eos_token_id=2, pad_token_id=None), **CONFIGS[name])
    kwargs.update(overrides)
    config = transformers.AutoConfig.for_model(MODEL_TYPE[name], **kwargs)
    config.dtype = torch.float32
    return config


def model_class(name: str):
    """The transformers class that loads tiny model `name` (or a checkpoint of that model_type) with
    from_pretrained: an auto class, or Emu3ForCausalLM, whose text config (emu3_text_model) no auto class takes."""
    if name == "bert":
        return transformers.AutoModelForMaskedLM
    if name == "emu3_text_model":
        return transformers.Emu3ForCausalLM
    return transformers.AutoModelForCausalLM


def new_model(name: str, config):
    """A randomly initialised float32 model of model_class(name) for transformers `config`."""
    cls = model_class(name)
    build = cls.from_config if cls.__name__.startswith("Auto") else cls._from_config
    return build(config, dtype=torch.float32)


def _is_norm(module) -> bool:
    return "norm" in type(module).__name__.lower()


def build_model(name: str, seed: int = 0, **overrides):
    """A randomly initialised float32 torch model for architecture `name` (config keywords
    `overrides` on top of its CONFIGS entry), in eval mode.

    Norm gains are drawn around their neutral value (1, or 0 for the `1 + weight` convention of gemma,
    nemotron and qwen3_next, whose norms transformers initialises to 0)
    and every norm and linear bias is non-zero.
    """
    config = make_config(name, **overrides)
    torch.manual_seed(seed)
    model = new_model(name, config).eval()
    spec = arch_for_config(config.to_dict())
    plus_one = any(n.kind in PLUS_ONE_KINDS for n in spec.attn_norm + spec.ffn_norm + spec.final_norm)
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            bias = getattr(module, "bias", None)
            if _is_norm(module) and isinstance(weight, torch.nn.Parameter):
                centre = 0.0 if plus_one or bool((weight == 0).all()) else 1.0
                weight.copy_(centre + 0.4 * (torch.rand(weight.shape, generator=generator) - 0.5) * 2)
            if isinstance(bias, torch.nn.Parameter):
                bias.copy_(0.1 * torch.randn(bias.shape, generator=generator))
        for name, tensor in [*model.named_buffers(), *model.named_parameters()]:
            if name.endswith("e_score_correction_bias"):   # a choice-only router bias (DeepSeek-V3, ernie4_5_moe)
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            if name.endswith("_proj_bias"):    # biases beside 3-D expert tensors (gpt-oss)
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            if name.endswith("sinks"):    # attention sink logits (gpt-oss, granite_swa, flint), large enough to matter
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model


def token_strings(vocab_size: int = VOCAB_SIZE, seed: int = 0) -> list[str]:
    """`vocab_size` distinct lowercase words; the first is the unknown token "[UNK]"."""
    rng = random.Random(seed)
    words = {"[UNK]"}
    ordered = ["[UNK]"]
    while len(ordered) < vocab_size:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7)))
        if word not in words:
            words.add(word)
            ordered.append(word)
    return ordered


def make_tokenizer(vocab: list[str]) -> Tokenizer:
    """A whitespace word-level tokenizer whose token id i is the string vocab[i]."""
    tokenizer = Tokenizer(models.WordLevel({s: i for i, s in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def save_tokenizer(vocab: list[str], directory) -> None:
    """Write tokenizer.json (+ a minimal tokenizer_config.json) for `vocab` into `directory`."""
    directory = Path(directory)
    make_tokenizer(vocab).save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}))


def save_checkpoint(model, directory, vocab: list[str] | None = None) -> Path:
    """Save `model` (safetensors) and, when given, a tokenizer over `vocab` into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if vocab is not None:
        save_tokenizer(vocab, directory)
    return directory


def build_checkpoint(name: str, directory, seed: int = 0) -> Path:
    """Build tiny model `name` with `seed` and save it, with its tokenizer, into `directory`."""
    return save_checkpoint(build_model(name, seed), directory, token_strings())


def sample_ids(n: int = 24, batch: int = 2, seed: int = 0, vocab_size: int = VOCAB_SIZE) -> torch.Tensor:
    """A fixed [batch, n] tensor of token ids (never id 0, the unknown token)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab_size, (batch, n), generator=generator)
