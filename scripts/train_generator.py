"""Train the bundled dog generator: the commands of huref_lab.generator_training (docs/GENERATOR.md).

    python scripts/train_generator.py init STATE --from huref/data/generator.safetensors
    python scripts/train_generator.py train STATE --photos ../shared/data/dog-photos --minutes 60
"""

import sys

from huref_lab.generator_training.cli import main

if __name__ == "__main__":
    sys.exit(main())
