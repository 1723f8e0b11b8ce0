"""The lab: function-preserving attacks (`attacks`), tiny-model zoo builders (`tiny_models`) and a
GGUF writer (`gguf_convert`), quantized-checkpoint writers (`quant_packing`), for tests, scripts and experiments;
training the bundled dog generator (`generator_training`).

Shipped beside `huref` as a separate top-level package; never imported by huref or stylegan2
runtime code (tests/test_lab_boundary.py checks this).
"""
