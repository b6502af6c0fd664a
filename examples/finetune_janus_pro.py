"""Single-stage Uni-Edit tuning of Janus-Pro: region-weighted image-token CE on edits plus VQA understanding CE.

One optimisation step mixes two losses on the same batch of Uni-Edit samples:

* **generation (editing)**: the target (edited) image is VQ-encoded by the model's own frozen VQ model into
  image-token ids; the language model sees ``<bos> User: <boi><image>*N<eoi> {instruction} Assistant: <boi>``
  (the source image enters through the SigLIP encoder + aligner, as in understanding) followed by the target's
  image tokens embedded with ``prepare_embeddings_for_image_generation``; the generation head predicts each
  image token from the previous ones. The per-token cross-entropy is multiplied by the UniWorld-V1 region
  weight map — ``w`` (masks.region_weight) on VQ cells the edit touched (the edit mask max-pooled to the VQ
  latent grid), 1 elsewhere — and averaged over tokens.
* **understanding**: the original VQA pair, ``<bos> User: <boi><image>*N<eoi> {question} Assistant: {answer}<eos>``,
  with the language-model head's cross-entropy on the answer tokens only.

``loss = gen_weight * L_gen + und_weight * L_und`` (``--und-weight 0`` is pure editing, the paper's single task).

Usage::

    # tiny random model, CPU, seconds (no download): what the tests run
    python examples/finetune_janus_pro.py --tiny --data <run dir or hf export> --steps 20 --out /tmp/janus-tiny

    # the real model (downloads deepseek-community/Janus-Pro-1B, ~4 GB; a GPU with >= 24 GB for batch 4 in bf16)
    python examples/finetune_janus_pro.py --data exports/uniedit-hf --steps 5000 --lr 2e-5 --batch-size 4 \\
        --out checkpoints/janus-pro-uniedit

The real path loads ``JanusForConditionalGeneration`` and ``JanusProcessor`` (transformers >= 4.50), trains in
bf16 on one device and saves with ``save_pretrained``; for multi-GPU runs wrap the same loss in your trainer
(FSDP / DeepSpeed). The loader (uniedit_synth.train.loader) resizes images to the model's image size and gives
edit masks at the VQ grid (``vq_config.num_patches``: 24 for Janus-Pro's 384 px images).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from uniedit_synth.train.loader import EditPairDataset

IGNORE_INDEX = -100
USER, ASSISTANT = "<|User|>: ", "\n\n<|Assistant|>:"


class ByteTokenizer:
    """A byte-level tokenizer built in-process for --tiny (no download): 6 specials, then the 256 bytes."""

    pad_token_id, bos_token_id, eos_token_id, image_token_id, boi_token_id, eoi_token_id = range(6)
    vocab_size = 6 + 256

    def encode(self, text: str) -> list[int]:
        return [6 + byte for byte in text.encode("utf-8")]


class ProcessorTokenizer:
    """The Janus-Pro tokenizer (from JanusProcessor) behind the same small interface as ByteTokenizer."""

    def __init__(self, processor: Any, image_token_id: int) -> None:
        tokenizer = processor.tokenizer
        self._tokenizer = tokenizer
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.image_token_id = image_token_id
        self.boi_token_id = tokenizer.convert_tokens_to_ids(processor.image_start_token)
        self.eoi_token_id = tokenizer.convert_tokens_to_ids(processor.image_end_token)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)


def tiny_model(vocab_size: int, image_token_id: int) -> Any:
    """A tiny random Janus (hidden 64, 32 px images, patch 8 → 16 image tokens, 64-entry VQ codebook)."""
    from transformers import JanusConfig, JanusForConditionalGeneration, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    hidden = 64
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=ByteTokenizer.pad_token_id,
        bos_token_id=ByteTokenizer.bos_token_id,
        eos_token_id=ByteTokenizer.eos_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_ratio=2.0,
        image_size=32,
        patch_size=8,
        projection_dim=hidden,
        num_image_tokens=16,
    )
    # 4 resolution levels → 3 downsamplings: 32 px → a 4×4 VQ grid, matching the vision grid (num_patches)
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 2, 2],
        num_res_blocks=1,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
    )
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token_id)
    return JanusForConditionalGeneration(config)


@dataclass
class Setup:
    model: Any
    tokenizer: ByteTokenizer | ProcessorTokenizer
    image_size: int
    num_image_tokens: int
    vq_grid: int
    #: sample id -> VQ token ids of its target image. The VQ model is frozen and the loader deterministic (no
    #: augmentation), so each target is encoded once; None disables the cache.
    vq_cache: dict[str, torch.Tensor] | None = field(default_factory=dict)


def build(args: argparse.Namespace, device: torch.device) -> Setup:
    if args.tiny:
        tokenizer = ByteTokenizer()
        model = tiny_model(tokenizer.vocab_size, tokenizer.image_token_id)
    else:
        from transformers import JanusForConditionalGeneration, JanusProcessor

        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = JanusForConditionalGeneration.from_pretrained(args.model, dtype=dtype)
        processor = JanusProcessor.from_pretrained(args.model)
        tokenizer = ProcessorTokenizer(processor, model.config.image_token_id)
    vision = model.config.vision_config
    num_image_tokens = (vision.image_size // vision.patch_size) ** 2
    return Setup(
        model.to(device),
        tokenizer,
        vision.image_size,
        num_image_tokens,
        model.config.vq_config.num_patches,
        vq_cache=None if getattr(args, "no_vq_cache", False) else {},
    )


def image_prompt(
    tokenizer: ByteTokenizer | ProcessorTokenizer, text: str, num_image_tokens: int
) -> list[int]:
    """<bos> User: <boi><image>*N<eoi>\\n{text} Assistant:"""
    return (
        [tokenizer.bos_token_id]
        + tokenizer.encode(USER)
        + [tokenizer.boi_token_id]
        + [tokenizer.image_token_id] * num_image_tokens
        + [tokenizer.eoi_token_id]
        + tokenizer.encode("\n" + text + ASSISTANT)
    )


def pad(rows: list[list[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to one length; returns (ids, attention mask)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@torch.no_grad()
def vq_tokens(setup: Setup, ids: list[str], target: torch.Tensor) -> torch.Tensor:
    """[B, grid*grid] image-token ids of the target images (row-major over the VQ latent grid)."""
    cache = setup.vq_cache
    missing = [i for i, sample_id in enumerate(ids) if cache is None or sample_id not in cache]
    fresh = {}
    if missing:
        encoded = setup.model.model.vqmodel.encode(target[missing]).image_tokens.view(len(missing), -1)
        fresh = dict(zip(missing, encoded, strict=True))
        if cache is not None:
            for i, tokens in fresh.items():
                cache[ids[i]] = tokens.to("cpu", torch.int32)
    rows = [fresh[i] if i in fresh else cache[sample_id].to(target.device) for i, sample_id in enumerate(ids)]
    return torch.stack(rows).long()


def generation_loss(setup: Setup, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Region-weighted CE of the target's VQ tokens, conditioned on instruction + source image."""
    model, tokenizer = setup.model, setup.tokenizer
    source = batch["source"].to(device, dtype=model.dtype)
    target = batch["target"].to(device, dtype=model.dtype)
    target_tokens = vq_tokens(setup, batch["id"], target)
    prompts = [
        image_prompt(tokenizer, text, setup.num_image_tokens) + [tokenizer.boi_token_id]
        for text in batch["instruction"]
    ]
    # left padding: every sequence's image tokens sit at the same positions at the end
    prompt_ids, prompt_mask = pad(prompts, tokenizer.pad_token_id, left=True)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    embeds = model.get_input_embeddings()(prompt_ids)
    features = model.model.get_image_features(source).pooler_output.to(embeds.dtype)
    image_slots = (prompt_ids == tokenizer.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(image_slots, features)
    generated = model.prepare_embeddings_for_image_generation(target_tokens[:, :-1]).to(embeds.dtype)
    inputs = torch.cat([embeds, generated], dim=1)
    attention = torch.cat([prompt_mask, torch.ones_like(target_tokens[:, :-1])], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    hidden = model.model.language_model(
        inputs_embeds=inputs, attention_mask=attention, position_ids=positions
    )
    # the hidden state at <boi> predicts image token 0, the one at token k predicts token k+1
    logits = model.model.generation_head(hidden.last_hidden_state[:, prompt_ids.shape[1] - 1 :]).float()
    token_ce = F.cross_entropy(logits.transpose(1, 2), target_tokens, reduction="none")
    mask = batch["mask"].to(device).flatten(1)  # VQ tokens are row-major over the latent grid, like the mask
    weight = batch["weight"].to(device)[:, None]
    token_weights = torch.where(mask, weight, torch.ones_like(weight))
    return (token_ce * token_weights).mean()


def understanding_loss(setup: Setup, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Answer-token CE of the original VQA pair given the source image and question."""
    model, tokenizer = setup.model, setup.tokenizer
    rows, labels = [], []
    for question, answer in zip(batch["question"], batch["answer"], strict=True):
        prompt = image_prompt(tokenizer, question, setup.num_image_tokens)
        reply = tokenizer.encode(" " + answer) + [tokenizer.eos_token_id]
        rows.append(prompt + reply)
        labels.append([IGNORE_INDEX] * len(prompt) + reply)
    input_ids, attention = pad(rows, tokenizer.pad_token_id, left=False)
    label_ids, _ = pad(labels, IGNORE_INDEX, left=False)
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        pixel_values=batch["source"].to(device, dtype=model.dtype),
        labels=label_ids.to(device),
    )
    return out.loss.float()


def batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="a uniedit run dir or an `uniedit export --format hf` dir"
    )
    parser.add_argument("--model", default="deepseek-community/Janus-Pro-1B", help="HF model id or local dir")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random model and byte tokenizer (CPU, no download)"
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--lr", type=float, default=None,
        help="learning rate (default: 2e-5, the paper's; 3e-3 with --tiny, whose random weights start far off)",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--gen-weight", type=float, default=1.0, help="weight of the region-weighted editing loss"
    )
    parser.add_argument(
        "--und-weight", type=float, default=1.0, help="weight of the VQA understanding loss (0: off)"
    )
    parser.add_argument("--weight-fn", default="log", choices=["log", "linear", "exp_root", "quad_root"])
    parser.add_argument(
        "--freeze-vision", action="store_true", help="also freeze the SigLIP encoder (VQ is always frozen)"
    )
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write metrics.jsonl and the tuned model"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 with --tiny, whose matrices are too small to gain from more; "
        "torch's default otherwise)",
    )
    parser.add_argument("--no-vq-cache", action="store_true", help="VQ-encode every target at every step")
    parser.add_argument("--no-save", action="store_true", help="write metrics only, not the model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Run the tuning; returns one metrics dict per step (also printed as JSON lines)."""
    args = parse_args(argv)
    threads = args.threads or (1 if args.tiny else None)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return train(args)
    finally:
        torch.set_num_threads(previous_threads)


def train(args: argparse.Namespace) -> list[dict[str, float]]:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    setup = build(args, device)
    model = setup.model
    model.model.vqmodel.requires_grad_(False)
    model.model.vqmodel.eval()
    if args.freeze_vision:
        model.model.vision_model.requires_grad_(False)
    model.train()
    dataset = EditPairDataset(
        args.data, image_size=setup.image_size, mask_grid=setup.vq_grid, weight_fn=args.weight_fn
    )
    if len(dataset) == 0:
        raise SystemExit(f"no samples in {args.data}")
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= args.batch_size,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    lr = args.lr if args.lr is not None else (3e-3 if args.tiny else 2e-5)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    history: list[dict[str, float]] = []
    metrics_file = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        metrics_file = (args.out / "metrics.jsonl").open("w")
    started = time.monotonic()
    for step, batch in zip(range(1, args.steps + 1), batches(loader), strict=False):
        loss_gen = (
            generation_loss(setup, batch, device) if args.gen_weight else torch.zeros((), device=device)
        )
        loss_und = (
            understanding_loss(setup, batch, device) if args.und_weight else torch.zeros((), device=device)
        )
        loss = args.gen_weight * loss_gen + args.und_weight * loss_und
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        record = {"step": step, "loss": loss.item(), "loss_gen": loss_gen.item(), "loss_und": loss_und.item()}
        if not all(math.isfinite(value) for value in record.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {record}")
        history.append(record)
        line = json.dumps({**record, "elapsed_s": round(time.monotonic() - started, 3)})
        print(line, flush=True)
        if metrics_file is not None:
            metrics_file.write(line + "\n")
    if metrics_file is not None:
        metrics_file.close()
        if not args.no_save:
            model.save_pretrained(args.out / "model")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
