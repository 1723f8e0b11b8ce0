"""Training the dog generator that huref bundles (huref/data/generator.safetensors), apart from the runtime.

- `photos`: the training photos decoded once into one uint8 tensor; their packed form for a GPU call.
- `augment`: adaptive discriminator augmentation (Karras et al. 2020) and its probability controller.
- `state`: a training state as files under 15 MiB each plus state.json, read back exactly.
- `loop`: a new state, the training step and run, the sample grid, the export to huref's format.
- `cli`: the commands (`python -m huref_lab.generator_training --help`; docs/GENERATOR.md).

`state/` holds the latest training state (G, G_ema, D, both optimizers, the augmentation state), which
the next run continues.
"""
