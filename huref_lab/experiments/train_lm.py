"""Training tiny causal language models from scratch on real text, and their trained offspring.

Everything here is plain torch + transformers + tokenizers on the CPU:
* `train_tokenizer`: a byte-level BPE tokenizer (the GPT-2 scheme) trained on a list of documents.
* `build_lm`: a tiny llama or gpt_neox model from a config, randomly initialised with a seed.
* `train`: AdamW, linear warm-up then cosine decay, random windows drawn with a seed (the data order).
* `heldout_loss`: mean next-token loss and bits per byte on held-out text (comparable across tokenizers).
* `extend_vocabulary`: append BPE tokens learned on a new corpus (new merges + new embedding rows).
* `merge_lora`: low-rank adapters on every block matrix, trained, then folded into the weights.
A model directory is Hugging Face layout: config.json, model.safetensors, tokenizer.json.
"""

import json
import math
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(documents: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with `vocab_size` tokens (id 0 is END_OF_TEXT) trained on `documents`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, documents: list[str]) -> torch.Tensor:
    """All `documents` as one 1-D int64 tensor of token ids, each document followed by END_OF_TEXT."""
    end = tokenizer.token_to_id(END_OF_TEXT)
    ids = []
    for encoding in tokenizer.encode_batch(documents):
        ids.extend(encoding.ids)
        ids.append(end)
    return torch.tensor(ids, dtype=torch.int64)


def lm_config(model_type: str, vocab_size: int, size: dict):
    """The transformers config of a tiny `model_type` ("llama" | "gpt_neox") LM; `size` has
    hidden, layers, heads, kv_heads, ffn, context."""
    common = dict(vocab_size=vocab_size, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                  num_attention_heads=size["heads"], intermediate_size=size["ffn"],
                  max_position_embeddings=size["context"], tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=0, initializer_range=0.02)
    if model_type == "llama":
        return transformers.LlamaConfig(num_key_value_heads=size["kv_heads"], rms_norm_eps=1e-5, **common)
    if model_type == "gpt_neox":
        return transformers.GPTNeoXConfig(rotary_pct=0.25, use_parallel_residual=True, **common)
    raise ValueError(f"no tiny config for {model_type}")


def build_lm(model_type: str, vocab_size: int, size: dict, seed: int):
    """A randomly initialised float32 causal LM (seeded)."""
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(lm_config(model_type, vocab_size, size),
                                                         dtype=torch.float32)


def train(model, ids: torch.Tensor, steps: int, seed: int, lr: float, batch: int, context: int,
          parameters=None, warmup: int = 50, log_every: int = 10, teacher=None) -> list[tuple[int, float]]:
    """Train `model` in place on random `context`-token windows of `ids`; returns [(step, mean loss)]
    averaged over each `log_every` steps. Only `parameters` (default: all) are updated. With a
    `teacher` (a causal LM over the same token ids) the loss is distillation, KL(teacher || model) of
    the next-token distributions (temperature 1), and the curve logs it."""
    parameters = list(parameters if parameters is not None else model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    curve, running = [], []
    for step in range(steps):
        starts = torch.randint(0, len(ids) - context - 1, (batch,), generator=generator)
        windows = torch.stack([ids[s: s + context + 1] for s in starts.tolist()])
        if teacher is None:
            loss = model(input_ids=windows[:, :-1], labels=windows[:, :-1].clone()).loss
            # transformers shifts labels itself; windows[:, -1] is simply unused
        else:
            with torch.no_grad():
                target = torch.log_softmax(teacher(input_ids=windows[:, :-1]).logits, -1)  # [batch, context, vocab]
            student = torch.log_softmax(model(input_ids=windows[:, :-1]).logits, -1)
            loss = torch.nn.functional.kl_div(student.flatten(0, 1), target.flatten(0, 1), log_target=True,
                                              reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if len(running) == log_every or step == steps - 1:
            curve.append((step + 1, sum(running) / len(running)))
            running = []
    model.eval()
    return curve


@torch.no_grad()
def heldout_loss(model, tokenizer: Tokenizer, text: str, context: int) -> dict:
    """{"loss": mean next-token loss in nats, "bpb": bits per byte of `text`} over non-overlapping windows."""
    ids = torch.tensor(tokenizer.encode(text).ids, dtype=torch.int64)
    n_windows = len(ids) // context
    windows = ids[: n_windows * context].view(n_windows, context)
    total, count = 0.0, 0
    model.eval()
    for chunk in windows.split(32):
        loss = model(input_ids=chunk, labels=chunk.clone()).loss
        total += loss.item() * chunk.numel()
        count += chunk.numel()
    loss = total / count
    bytes_per_token = len(text.encode("utf-8")) / len(ids)
    return {"loss": round(loss, 4), "bpb": round(loss / math.log(2) / bytes_per_token, 4)}


def save(model, tokenizer: Tokenizer, directory: Path, info: dict) -> Path:
    """Write `model` (safetensors), tokenizer.json and info.json (training facts) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "info.json").write_text(json.dumps(info, indent=1))
    return directory


def load(directory: Path):
    """(model, tokenizer, info) saved by `save`."""
    directory = Path(directory)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return model, tokenizer, json.loads((directory / "info.json").read_text())


def extend_vocabulary(model, tokenizer: Tokenizer, documents: list[str], n_new: int):
    """Append up to `n_new` BPE tokens learned on `documents` to `tokenizer` and `model`.

    A BPE tokenizer is trained on `documents`; its merges are walked in order and each one whose
    parts are already known and whose result is new is appended (lowest priority) to the base's
    merges. Each new embedding (input and output) row starts as the mean of the rows of the
    pieces the base tokenizer cut that token into. Returns (model, new tokenizer, new token strings).
    """
    base = json.loads(tokenizer.to_str())
    vocab, merges = base["model"]["vocab"], base["model"]["merges"]
    learned = json.loads(train_tokenizer(documents, len(vocab) + 4 * n_new).to_str())["model"]["merges"]
    new_tokens = []
    for left, right in learned:
        if len(new_tokens) == n_new:
            break
        if left in vocab and right in vocab and left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append([left, right])
            new_tokens.append(left + right)
    extended = Tokenizer.from_str(json.dumps(base))
    old_size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(vocab), mean_resizing=False)
    byte_decoder = decoders.ByteLevel()
    with torch.no_grad():
        for token in new_tokens:
            pieces = tokenizer.encode(byte_decoder.decode([token])).ids
            for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
                matrix[vocab[token]] = matrix[pieces].mean(0)
    assert all(vocab[t] >= old_size for t in new_tokens)
    return model, extended, new_tokens


class LoRALinear(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update: y = W x + (alpha/r) B A x."""

    def __init__(self, linear: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.linear, self.scale = linear, alpha / rank
        self.a = torch.nn.Parameter(torch.randn(rank, linear.in_features, generator=generator) / math.sqrt(linear.in_features))
        self.b = torch.nn.Parameter(torch.zeros(linear.out_features, rank))

    def forward(self, x):
        return self.linear(x) + self.scale * (x @ self.a.T) @ self.b.T

    def merged(self) -> torch.nn.Linear:
        with torch.no_grad():
            self.linear.weight += self.scale * self.b @ self.a
        return self.linear


def _block_linears(model):
    """(parent module, attribute name) of every nn.Linear of `model` except its output head."""
    head = model.get_output_embeddings()
    return [(module, name) for module in model.modules() for name, child in module.named_children()
            if isinstance(child, torch.nn.Linear) and child is not head]


def train_lora_merged(model, ids: torch.Tensor, steps: int, seed: int, rank: int, lr: float, batch: int,
                      context: int) -> list[tuple[int, float]]:
    """Wrap every block matrix of `model` in LoRALinear (rank `rank`, alpha 2*rank), train only the
    adapters on `ids`, then merge them into the weights in place. Returns the loss curve."""
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    wrapped = []
    for parent, name in _block_linears(model):
        lora = LoRALinear(getattr(parent, name), rank, 2.0 * rank, generator)
        setattr(parent, name, lora)
        wrapped.append((parent, name, lora))
    adapters = [p for _, _, lora in wrapped for p in (lora.a, lora.b)]
    curve = train(model, ids, steps, seed, lr, batch, context, parameters=adapters)
    for parent, name, lora in wrapped:
        setattr(parent, name, lora.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return curve

