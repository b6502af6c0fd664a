"""Single-stage Uni-Edit tuning of Janus-Pro: region-weighted image-token CE on edits (optionally plus VQA
understanding CE), on one device or distributed with Ray Train, with resumable checkpoints.

**Generation (editing), the paper's recipe.** The target (edited) image is VQ-encoded by the model's own frozen VQ
model into image-token ids; the language model sees ``<bos> User: <boi><image>*N<eoi>\\n{instruction} Assistant:
<boi>`` (the source image enters through the SigLIP encoder + aligner, as in understanding) followed by the
target's image tokens embedded with ``prepare_embeddings_for_image_generation``; the generation head predicts each
image token from the previous ones. The per-token cross-entropy is multiplied by the UniWorld-V1 region weight
map — ``w`` (masks.region_weight) on VQ cells the edit touched, 1 elsewhere — and averaged over tokens.
**Condition dropout** (``--cond-dropout``, default 0.1): a sample's whole condition (source image and instruction)
is replaced by ``<pad>`` tokens — Janus's unconditional prompt, every token between ``<bos>`` and the last
``<boi>`` — so the model also learns the unconditional branch that classifier-free guidance needs at inference
(examples/edit_with_janus_pro.py). The draw is a hash of (seed, sample id, step), not an RNG, so runs with any
number of ranks or micro-batches and resumed runs drop the same samples.

**Understanding (optional, ``--und-weight``, default 0).** The Uni-Edit recipe tunes on the edit data only (the
authors' BAGEL fork has no text loss); ``--und-weight 0.5`` adds the original VQA pair, ``<bos> User: <boi><image>*N
<eoi>\\n{question} Assistant: {answer}<eos>``, with the language-model head's CE on the answer tokens, to guard
understanding against forgetting. ``loss = gen_weight * L_gen + und_weight * L_und``.

**Batches.** ``--batch-size`` is the global batch of one optimizer step: ``ranks × --grad-accum × micro-batch``.
Data come in a deterministic order (uniedit_synth.train.sampler): every epoch shuffles the row groups, each rank
reads every W-th group (disjoint) and the position is one integer, so checkpoints resume exactly.
``--rank-layout W`` makes one process read what W ranks would (the same global batches as ``--ray-workers W``).

**Distributed** (``--ray-workers N``): Ray Train's ``TorchTrainer`` runs the same loop on N workers — DDP, or FSDP
(``--fsdp``, FSDP2 ``fully_shard`` per decoder layer) for models that do not fit one device — gloo on CPU, NCCL on
GPUs (``--gpus-per-worker``); joins ``RAY_ADDRESS``/``--ray-address`` if set. bf16 weights on GPU, fp32 on CPU;
``--grad-checkpointing`` recomputes decoder activations in the backward pass.

**Checkpoints** (``--save-every K``): ``<out>/checkpoints/step-NNNNNNNN/`` (``--out`` a path or a pyarrow URI such as
``s3://bucket/run``) holds the model, optimizer and scheduler state, the data position and every rank's RNG
states; a ``COMPLETE`` file written last marks it whole. ``--resume`` continues from the latest complete one (a
directory cut by a kill has no ``COMPLETE`` and is skipped); losses then match an uninterrupted run bit for bit on
CPU. The tuned model is saved with ``save_pretrained`` to ``<out>/model`` (with its tokenizer or processor), which
edit_with_janus_pro.py and eval_edits.py load.

Usage::

    # tiny random model, CPU, seconds (no download): what the tests run
    python examples/finetune_janus_pro.py --tiny --data <run dir or hf export> --steps 20 --out /tmp/janus-tiny

    # one GPU (downloads deepseek-community/Janus-Pro-1B, ~4 GB; >= 24 GB for batch 4 in bf16)
    python examples/finetune_janus_pro.py --data exports/uniedit-hf --steps 5000 --lr 2e-5 --batch-size 4 \\
        --save-every 500 --out checkpoints/janus-pro-uniedit

    # 8 GPUs of one node or a Ray cluster (RAY_ADDRESS=...), Janus-Pro-7B sharded with FSDP
    python examples/finetune_janus_pro.py --model deepseek-community/Janus-Pro-7B --data exports/uniedit-hf \\
        --ray-workers 8 --gpus-per-worker 1 --fsdp --grad-checkpointing --batch-size 64 --grad-accum 2 \\
        --save-every 500 --out s3://bucket/janus-pro-7b-uniedit     # add --resume after a preemption

Needs transformers >= 5.0 (``JanusForConditionalGeneration`` with the 5.x ``get_image_features`` /
``vqmodel.encode`` outputs; the floor in pyproject's ``train`` extra was found by running the tests against older
releases). The loader (uniedit_synth.train.loader) resizes images to the model's image size and gives edit masks
at the VQ grid (``vq_config.num_patches``: 24 for Janus-Pro's 384 px images).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from uniedit_synth.core.errors import UniEditError
from uniedit_synth.run.fs import RunFS, open_run_fs
from uniedit_synth.train.loader import EditPairDataset, shard_files, to_model_range
from uniedit_synth.train.sampler import RankBatches

IGNORE_INDEX = -100
USER, ASSISTANT = "<|User|>: ", "\n\n<|Assistant|>:"
#: written next to a saved model: which tokenizer it was trained with (the tiny byte tokenizer or the processor)
TOKENIZER_FILE = "uniedit_tokenizer.json"
CHECKPOINTS = "checkpoints"


class TrainingError(UniEditError):
    """A problem with the training inputs or options (printed as one line, exit 2)."""


def run_cli(entry: Any, argv: list[str]) -> None:
    """Run a script's main: user errors print one line and exit 2, as the uniedit CLI does."""
    try:
        entry(argv)
    except UniEditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


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
    processor: Any = None
    #: sample id -> VQ token ids of its target image. The VQ model is frozen and the loader deterministic (no
    #: augmentation), so each target is encoded once; None disables the cache.
    vq_cache: dict[str, torch.Tensor] | None = field(default_factory=dict)


def model_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _setup(model: Any, tokenizer: Any, processor: Any, device: torch.device, vq_cache: bool = True) -> Setup:
    vision = model.config.vision_config
    return Setup(
        model.to(device),
        tokenizer,
        vision.image_size,
        (vision.image_size // vision.patch_size) ** 2,
        model.config.vq_config.num_patches,
        processor=processor,
        vq_cache={} if vq_cache else None,
    )


def build(args: argparse.Namespace, device: torch.device) -> Setup:
    """The model to tune: a tiny random one (--tiny) or --model (a hub id or a local dir, e.g. a tuned model)."""
    if args.tiny:
        tokenizer = ByteTokenizer()
        model = tiny_model(tokenizer.vocab_size, tokenizer.image_token_id)
        return _setup(model, tokenizer, None, device, not getattr(args, "no_vq_cache", False))
    setup = load_model(args.model, device)
    setup.vq_cache = None if getattr(args, "no_vq_cache", False) else {}
    return setup


def load_model(location: str | os.PathLike[str], device: torch.device) -> Setup:
    """A model saved by this script (its tokenizer marker says which tokenizer) or a Janus-Pro checkpoint."""
    from transformers import JanusForConditionalGeneration

    marker = Path(location) / TOKENIZER_FILE
    kind = json.loads(marker.read_text()).get("kind") if marker.is_file() else "processor"
    model = JanusForConditionalGeneration.from_pretrained(location, dtype=model_dtype(device))
    if kind == "byte":
        return _setup(model, ByteTokenizer(), None, device)
    from transformers import JanusProcessor

    processor = JanusProcessor.from_pretrained(location)
    return _setup(model, ProcessorTokenizer(processor, model.config.image_token_id), processor, device)


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


def edit_prompt(
    tokenizer: ByteTokenizer | ProcessorTokenizer, instruction: str, num_image_tokens: int
) -> list[int]:
    """The conditional generation prompt: the image prompt with the instruction, then <boi>."""
    return image_prompt(tokenizer, instruction, num_image_tokens) + [tokenizer.boi_token_id]


def unconditional_prompt(tokenizer: ByteTokenizer | ProcessorTokenizer, conditional: list[int]) -> list[int]:
    """Janus's unconditional branch: the same length, every token between <bos> and the last <boi> a <pad>."""
    return [conditional[0]] + [tokenizer.pad_token_id] * (len(conditional) - 2) + [conditional[-1]]


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


def image_features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """[B, N, hidden] aligned SigLIP features of the source images."""
    return model.model.get_image_features(pixel_values).pooler_output


def condition_embeddings(
    model: Any, tokenizer: Any, prompt_ids: torch.Tensor, source: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Token embeddings of the prompts with the source-image features in the <image> slots of kept rows."""
    embeds = model.get_input_embeddings()(prompt_ids)
    features = image_features(model, source).to(embeds.dtype)
    image_slots = (prompt_ids == tokenizer.image_token_id).unsqueeze(-1).expand_as(embeds)
    return embeds.masked_scatter(image_slots, features[keep])


def generation_logits(
    model: Any,
    tokenizer: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    source: torch.Tensor,
    keep: torch.Tensor,
    target_tokens: torch.Tensor,
) -> torch.Tensor:
    """[B, T, codebook] float logits of every target image token given the (left-padded) prompt and the
    previous target tokens (teacher forcing)."""
    embeds = condition_embeddings(model, tokenizer, prompt_ids, source, keep)
    generated = model.prepare_embeddings_for_image_generation(target_tokens[:, :-1]).to(embeds.dtype)
    inputs = torch.cat([embeds, generated], dim=1)
    attention = torch.cat([prompt_mask, torch.ones_like(target_tokens[:, :-1])], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    hidden = model.model.language_model(
        inputs_embeds=inputs, attention_mask=attention, position_ids=positions
    )
    # the hidden state at <boi> predicts image token 0, the one at token k predicts token k+1
    return model.model.generation_head(hidden.last_hidden_state[:, prompt_ids.shape[1] - 1 :]).float()


class EditLoss(torch.nn.Module):
    """The training objective as one module, so DDP/FSDP see every forward that makes a gradient."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def forward(
        self, gen: dict[str, torch.Tensor] | None, und: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        zero = next(self.model.parameters()).new_zeros((), dtype=torch.float32)
        loss_gen, loss_und, tokens = zero, zero, None
        if gen is not None:
            loss_gen, tokens = self._generation(**gen)
        if und is not None:
            loss_und = self.model(**und).loss.float()
        return loss_gen, loss_und, tokens

    def _generation(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        target_tokens: torch.Tensor | None,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        keep: torch.Tensor,
        token_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        if target_tokens is None:  # inside forward: under FSDP the VQ weights exist only here
            with torch.no_grad():
                target_tokens = model.model.vqmodel.encode(target).image_tokens.view(len(target), -1).long()
        logits = generation_logits(
            model, self.tokenizer, prompt_ids, prompt_mask, source, keep, target_tokens
        )
        token_ce = F.cross_entropy(logits.transpose(1, 2), target_tokens, reduction="none")
        return (token_ce * token_weights).mean(), target_tokens


def dropped(seed: int, sample_id: str, step: int, probability: float) -> bool:
    """Whether condition dropout removes this sample's condition at this optimizer step (a hash, not an RNG:
    the same draw with any number of ranks, accumulation micro-batches, or after a resume)."""
    if probability <= 0:
        return False
    digest = hashlib.sha256(f"{seed}/{step}/{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < probability


def generation_inputs(
    setup: Setup, batch: dict[str, Any], device: torch.device, drop: list[bool] | None = None
) -> dict[str, torch.Tensor]:
    """Tensors for EditLoss' generation term: prompts (unconditional where `drop`), target tokens from the VQ
    cache when it has them all, and the per-token region weights."""
    tokenizer, dtype = setup.tokenizer, setup.model.dtype
    drop = drop or [False] * len(batch["id"])
    prompts = []
    for text, is_dropped in zip(batch["instruction"], drop, strict=True):
        prompt = edit_prompt(tokenizer, text, setup.num_image_tokens)
        prompts.append(unconditional_prompt(tokenizer, prompt) if is_dropped else prompt)
    # left padding: every sequence's image tokens sit at the same positions at the end
    prompt_ids, prompt_mask = pad(prompts, tokenizer.pad_token_id, left=True)
    cache = setup.vq_cache
    cached = None
    if cache is not None and all(sample_id in cache for sample_id in batch["id"]):
        cached = torch.stack([cache[sample_id] for sample_id in batch["id"]]).long().to(device)
    mask = batch["mask"].to(device).flatten(1)  # VQ tokens are row-major over the latent grid, like the mask
    weight = batch["weight"].to(device)[:, None]
    return {
        # the loader hands out uint8 pixels; they become [-1, 1] on the device
        "source": to_model_range(batch["source"].to(device, non_blocking=True), dtype),
        "target": to_model_range(batch["target"].to(device, non_blocking=True), dtype),
        "target_tokens": cached,
        "prompt_ids": prompt_ids.to(device),
        "prompt_mask": prompt_mask.to(device),
        "keep": torch.tensor([not d for d in drop], device=device),
        "token_weights": torch.where(mask, weight, torch.ones_like(weight)),
    }


def understanding_inputs(
    setup: Setup, batch: dict[str, Any], device: torch.device
) -> dict[str, torch.Tensor]:
    """Answer-token CE inputs of the original VQA pair given the source image and question."""
    tokenizer = setup.tokenizer
    rows, labels = [], []
    for question, answer in zip(batch["question"], batch["answer"], strict=True):
        prompt = image_prompt(tokenizer, question, setup.num_image_tokens)
        reply = tokenizer.encode(" " + answer) + [tokenizer.eos_token_id]
        rows.append(prompt + reply)
        labels.append([IGNORE_INDEX] * len(prompt) + reply)
    input_ids, attention = pad(rows, tokenizer.pad_token_id, left=False)
    label_ids, _ = pad(labels, IGNORE_INDEX, left=False)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "pixel_values": to_model_range(batch["source"].to(device, non_blocking=True), setup.model.dtype),
        "labels": label_ids.to(device),
    }


def remember_tokens(setup: Setup, ids: list[str], tokens: torch.Tensor | None) -> None:
    if setup.vq_cache is not None and tokens is not None:
        for sample_id, row in zip(ids, tokens, strict=True):
            setup.vq_cache.setdefault(sample_id, row.detach().to("cpu", torch.int32))


def generation_loss(setup: Setup, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Region-weighted CE of the target's VQ tokens, conditioned on instruction + source image."""
    loss, _, tokens = EditLoss(setup.model, setup.tokenizer)(generation_inputs(setup, batch, device), None)
    remember_tokens(setup, batch["id"], tokens)
    return loss


def understanding_loss(setup: Setup, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    return EditLoss(setup.model, setup.tokenizer)(None, understanding_inputs(setup, batch, device))[1]


# -- distribution and checkpoints ------------------------------------------------------------------------------


@dataclass
class Dist:
    """Where this process stands in the run: rank, world size, device; `distributed` once a process group runs."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            torch.distributed.all_reduce(values)
            values = values / self.world_size
        return values


def wrap_for_training(loss: EditLoss, args: argparse.Namespace, dist: Dist) -> torch.nn.Module:
    """DDP or FSDP2 around the objective (the frozen VQ model stays inside: it runs in forward)."""
    if not dist.distributed:
        return loss
    if args.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in loss.model.model.language_model.layers:
            fully_shard(layer)
        return fully_shard(loss)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    # the LM head gets no gradient without the understanding loss, the vision tower none on a micro-batch
    # whose conditions were all dropped
    return DistributedDataParallel(loss, device_ids=device_ids, find_unused_parameters=True)


def _state_options(**extra: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **extra)


def full_model_state(wrapped: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict (gathered under FSDP; real on rank 0), keys as in the HF model."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(wrapped, options=_state_options())
    return {key.removeprefix("module.").removeprefix("model."): value for key, value in state.items()}


def save_tuned_model(setup: Setup, state: dict[str, torch.Tensor], out: RunFS, rel: str, tiny: bool) -> None:
    """save_pretrained (+ tokenizer marker and processor) into out/rel, through a local temp dir for URIs."""
    local = out.local_root
    with tempfile.TemporaryDirectory(prefix="janus-save-") as scratch:
        target = (local / rel) if local is not None else Path(scratch) / "model"
        setup.model.save_pretrained(target, state_dict=state)
        (target / TOKENIZER_FILE).write_text(json.dumps({"kind": "byte" if tiny else "processor"}) + "\n")
        if setup.processor is not None:
            setup.processor.save_pretrained(target)
        if local is None:
            for path in sorted(p for p in target.rglob("*") if p.is_file()):
                out.write_bytes(f"{rel}/{path.relative_to(target).as_posix()}", path.read_bytes())


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _torch_load(data: bytes, weights_only: bool = True) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(step: int) -> str:
    return f"{CHECKPOINTS}/step-{step:08d}"


def save_checkpoint(
    out: RunFS,
    step: int,
    position: int,
    wrapped: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dist: Dist,
) -> None:
    """Every rank writes its RNG state, rank 0 the full model/optimizer/scheduler state and data position; the
    `<dir>.complete` marker (file sizes inside) is written last, after every rank is done."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    folder = checkpoint_dir(step)
    marker = f"{folder}.complete"
    if dist.rank == 0:
        out.delete(marker)  # a rerun re-saving this step must not leave the old marker over new files
    dist.barrier()
    model_state = full_model_state(wrapped)  # collectives under FSDP: every rank calls them
    optimizer_state = get_optimizer_state_dict(wrapped, optimizer, options=_state_options())
    out.write_bytes(f"{folder}/rng-rank{dist.rank:05d}.pt", _torch_bytes(rng_state()))
    if dist.rank == 0:
        files = {
            "model.pt": _torch_bytes(model_state),
            "optimizer.pt": _torch_bytes(optimizer_state),
            "trainer.pt": _torch_bytes(
                {"step": step, "position": position, "scheduler": scheduler.state_dict()}
            ),
        }
        for name, data in files.items():
            out.write_bytes(f"{folder}/{name}", data, fsync=True)
    dist.barrier()
    if dist.rank == 0:
        sizes = {name: out.size(f"{folder}/{name}") for name in out.list(folder)}
        body = {"step": step, "position": position, "world_size": dist.world_size, "files": sizes}
        out.write_bytes(marker, (json.dumps(body, sort_keys=True) + "\n").encode(), fsync=True)
    dist.barrier()


def latest_checkpoint(out: RunFS) -> dict[str, Any] | None:
    """The newest checkpoint whose `.complete` marker exists and whose files have the recorded sizes."""
    for name in sorted(out.list(CHECKPOINTS, "step-*.complete"), reverse=True):
        raw = out.read_bytes(f"{CHECKPOINTS}/{name}")
        try:
            body = json.loads(raw or b"")
        except ValueError:
            continue
        folder = f"{CHECKPOINTS}/{name.removesuffix('.complete')}"
        if all(out.size(f"{folder}/{file}") == size for file, size in body.get("files", {}).items()):
            return {**body, "folder": folder}
    return None


def load_checkpoint(
    out: RunFS,
    found: dict[str, Any],
    wrapped: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dist: Dist,
) -> tuple[int, int]:
    """Restore model, optimizer, scheduler and RNG states; returns (step, data position)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    folder = found["folder"]
    model_state = _torch_load(out.read_bytes(f"{folder}/model.pt"))
    prefix = "model."
    set_model_state_dict(
        wrapped, {prefix + key: value for key, value in model_state.items()}, options=_state_options()
    )
    optimizer_state = _torch_load(out.read_bytes(f"{folder}/optimizer.pt"))
    set_optimizer_state_dict(wrapped, optimizer, optimizer_state, options=_state_options())
    trainer = _torch_load(out.read_bytes(f"{folder}/trainer.pt"))
    scheduler.load_state_dict(trainer["scheduler"])
    own = out.read_bytes(f"{folder}/rng-rank{dist.rank:05d}.pt") or out.read_bytes(
        f"{folder}/rng-rank00000.pt"
    )
    if own is not None:
        set_rng_state(_torch_load(own, weights_only=False))
    return int(trainer["step"]), int(trainer["position"])


class MetricsLog:
    """metrics.jsonl under --out: appended line by line on a local dir, rewritten whole at checkpoints on a URI.
    A resumed run first drops what the killed run logged after its checkpoint."""

    def __init__(self, out: RunFS | None, keep_until: int | None) -> None:
        self.out = out
        self.lines: list[str] = []
        self._file = None
        if out is None:
            return
        if keep_until is not None:
            old = (out.read_bytes("metrics.jsonl") or b"").decode().splitlines()
            self.lines = [line for line in old if line.strip() and json.loads(line)["step"] <= keep_until]
        self._rewrite()
        if out.local_root is not None:
            self._file = (out.local_root / "metrics.jsonl").open("a")

    def _rewrite(self) -> None:
        if self.out is not None:
            self.out.write_bytes("metrics.jsonl", "".join(line + "\n" for line in self.lines).encode())

    def write(self, line: str) -> None:
        self.lines.append(line)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def flush(self) -> None:
        if self._file is None:
            self._rewrite()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        else:
            self._rewrite()


# -- the training loop -----------------------------------------------------------------------------------------


def micro_batch_size(args: argparse.Namespace, ranks: int) -> int:
    per_step = ranks * args.grad_accum
    if args.batch_size % per_step:
        raise TrainingError(
            f"--batch-size {args.batch_size} is the global batch: it must be a multiple of ranks × --grad-accum "
            f"= {ranks} × {args.grad_accum}"
        )
    return args.batch_size // per_step


def warmup_then_constant(warmup_steps: int):
    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0

    return factor


def train(args: argparse.Namespace, dist: Dist | None = None) -> list[dict[str, float]]:
    """The training loop of one process (the only one, or one Ray Train worker); returns rank 0's metrics."""
    dist = dist or Dist(device=torch.device(args.device))
    device = dist.device
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # every rank builds the same initial weights
    setup = build(args, device)
    model = setup.model
    model.model.vqmodel.requires_grad_(False)
    model.model.vqmodel.eval()
    if args.freeze_vision:
        model.model.vision_model.requires_grad_(False)
    if not args.und_weight:
        model.lm_head.requires_grad_(False)  # only the understanding loss reaches the text head
    if args.grad_checkpointing:
        checkpointing = getattr(model, "activation_checkpointing_enable", None)
        if checkpointing is not None:  # transformers 5.x's name; gradient_checkpointing_enable warns, goes in v6
            checkpointing(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    if args.fsdp:
        setup.vq_cache = None  # under FSDP the VQ weights are gathered only inside forward
    wrapped = wrap_for_training(EditLoss(model, setup.tokenizer), args, dist)

    try:
        dataset = EditPairDataset(
            args.data, image_size=setup.image_size, mask_grid=setup.vq_grid, weight_fn=args.weight_fn
        )
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingError(str(exc).splitlines()[0]) from None
    if len(dataset) == 0:
        raise TrainingError(f"no samples in {args.data}")
    layout = dist.world_size if dist.distributed else args.rank_layout
    micro = micro_batch_size(args, layout)
    group_rows = [rows for _path, _group, rows in dataset.groups]
    ranks = [dist.rank] if dist.distributed else list(range(layout))

    params = [p for p in wrapped.parameters() if p.requires_grad]
    lr = args.lr if args.lr is not None else (3e-3 if args.tiny else 2e-5)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_constant(args.warmup_steps))

    out = open_run_fs(args.out) if args.out else None
    step, position = 0, 0
    if args.resume:
        if out is None:
            raise TrainingError("--resume needs --out (where the checkpoints are)")
        found = latest_checkpoint(out)
        if found is not None:
            step, position = load_checkpoint(out, found, wrapped, optimizer, scheduler, dist)
            print(
                f"resuming from {out.display_path(found['folder'])} (step {step})",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(
                f"no complete checkpoint under {out.display_path(CHECKPOINTS)}: starting at step 0",
                file=sys.stderr,
                flush=True,
            )
    try:
        sampler = RankBatches(
            group_rows, batch_size=micro, world_size=layout, ranks=ranks, seed=args.seed, start=position
        )
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    # uint8 batches in page-locked memory: the copy to a GPU overlaps the step (non_blocking above)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=args.num_workers, pin_memory=device.type == "cuda"
    )
    batches = iter(loader)
    metrics = MetricsLog(out if dist.rank == 0 else None, keep_until=step if args.resume else None)
    id_log = None
    if args.log_ids and out is not None and out.local_root is not None:
        id_log = (out.local_root / "ranks").joinpath(f"rank-{dist.rank:05d}.jsonl")
        id_log.parent.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            id_log.write_text("")
    history: list[dict[str, float]] = []
    started = time.monotonic()
    while step < args.steps:
        step += 1
        optimizer.zero_grad(set_to_none=True)
        sums = [0.0, 0.0, 0.0]
        step_ids: list[str] = []
        for accum in range(args.grad_accum):
            batch = next(batches)
            drop = [dropped(args.seed, i, step, args.cond_dropout) for i in batch["id"]]
            gen = generation_inputs(setup, batch, device, drop) if args.gen_weight else None
            und = understanding_inputs(setup, batch, device) if args.und_weight else None
            sync = (
                wrapped.no_sync()
                if dist.distributed and not args.fsdp and accum < args.grad_accum - 1
                else contextlib.nullcontext()
            )
            with sync:
                loss_gen, loss_und, tokens = wrapped(gen, und)
                loss = args.gen_weight * loss_gen + args.und_weight * loss_und
                (loss / args.grad_accum).backward()
            remember_tokens(setup, batch["id"], tokens)
            sums = [a + b.item() for a, b in zip(sums, (loss, loss_gen, loss_und), strict=True)]
            step_ids.extend(batch["id"])
            position += 1
        # on the device: NCCL reduces CUDA tensors only
        totals = dist.mean(torch.tensor(sums, dtype=torch.float64, device=device) / args.grad_accum)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        record = {
            "step": step,
            "loss": totals[0].item(),
            "loss_gen": totals[1].item(),
            "loss_und": totals[2].item(),
        }
        if not all(math.isfinite(value) for value in record.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {record}")
        history.append(record)
        if id_log is not None:
            with id_log.open("a") as handle:
                handle.write(json.dumps({"step": step, "ids": step_ids}) + "\n")
        if dist.rank == 0:
            line = json.dumps(
                {
                    **record,
                    "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": round(time.monotonic() - started, 3),
                }
            )
            print(line, flush=True)
            metrics.write(line)
        if out is not None and args.save_every and step % args.save_every == 0:
            save_checkpoint(out, step, position, wrapped, optimizer, scheduler, dist)
            metrics.flush()
        if args.halt_after_step == step:  # tests: a preemption point (the test SIGKILLs the process here)
            print(f"halted after step {step}", file=sys.stderr, flush=True)
            time.sleep(3600)
    metrics.close()
    if out is not None and not args.no_save:
        state = full_model_state(wrapped)
        if dist.rank == 0:
            save_tuned_model(setup, state, out, "model", args.tiny)
        dist.barrier()
    return history


# -- Ray Train ---------------------------------------------------------------------------------------------------


def ray_worker_loop(config: dict[str, Any]) -> None:
    """TorchTrainer's per-worker function: the process group is up (gloo on CPU, NCCL on GPU)."""
    import ray.train
    import ray.train.torch

    args = argparse.Namespace(**config["args"])
    context = ray.train.get_context()
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    dist = Dist(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        distributed=True,
    )
    history = train(args, dist)
    ray.train.report({"steps": len(history), "loss": history[-1]["loss"] if history else float("nan")})


def train_on_ray(args: argparse.Namespace) -> list[dict[str, float]]:
    """Run `train` on --ray-workers Ray Train workers; returns the metrics rank 0 wrote to --out."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if args.out is None:
        raise TrainingError("--ray-workers needs --out (metrics, checkpoints and the model go there)")
    if args.rank_layout not in (1, args.ray_workers):
        raise TrainingError(
            "--rank-layout is for single-process runs; with --ray-workers the layout is the workers"
        )
    micro_batch_size(args, args.ray_workers)  # fail here, not in N workers
    try:
        shard_files(args.data)
    except FileNotFoundError as exc:
        raise TrainingError(str(exc)) from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started_here = False
    if not ray.is_initialized():
        address = args.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(
                address="local",
                num_cpus=max(args.ray_workers * args.cpus_per_worker, os.cpu_count() or 1),
                include_dashboard=False,
                _temp_dir=tempfile.mkdtemp(prefix=f"uniedit-train-ray-{os.getpid()}-", dir="/tmp"),
            )
        started_here = True
    if __name__ != "__main__":  # loaded as a module (tests, importlib): workers cannot import it by name
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    use_gpu = args.gpus_per_worker > 0
    out = open_run_fs(args.out)
    storage = (
        str(out.local_root.resolve() / "ray") if out.local_root is not None else f"{args.out.rstrip('/')}/ray"
    )
    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"args": {**vars(args), "device": "cuda" if use_gpu else "cpu"}},
        scaling_config=ScalingConfig(
            num_workers=args.ray_workers,
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": args.cpus_per_worker,
                **({"GPU": args.gpus_per_worker} if use_gpu else {}),
            },
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=f"janus-{int(time.time())}", storage_path=storage),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as exc:
        cause = str(exc).strip().splitlines()
        raise TrainingError(
            f"Ray Train failed ({cause[0] if cause else type(exc).__name__}); the worker's "
            "traceback is in the log above"
        ) from None
    finally:
        if started_here:
            ray.shutdown()
    lines = (out.read_bytes("metrics.jsonl") or b"").decode().splitlines()
    keys = ("step", "loss", "loss_gen", "loss_und")
    return [{key: json.loads(line)[key] for key in keys} for line in lines if line.strip()]


# -- command line ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="a uniedit run dir or an `uniedit export --format hf` dir"
    )
    parser.add_argument("--model", default="deepseek-community/Janus-Pro-1B", help="HF model id or local dir")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random model and byte tokenizer (CPU, no download)"
    )
    parser.add_argument(
        "--steps", type=int, default=1000, help="optimizer steps in all (a resumed run included)"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: 2e-5, the paper's; 3e-3 with --tiny, whose random weights start far off)",
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=0, help="linear warm-up, then constant (as BAGEL)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="global batch per optimizer step = ranks × --grad-accum × micro-batch",
    )
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step and rank")
    parser.add_argument(
        "--gen-weight", type=float, default=1.0, help="weight of the region-weighted editing loss"
    )
    parser.add_argument(
        "--und-weight",
        type=float,
        default=0.0,
        help="weight of the VQA understanding loss (default 0: edit data only, the paper's recipe; e.g. 0.5 to "
        "guard understanding against forgetting)",
    )
    parser.add_argument(
        "--cond-dropout",
        type=float,
        default=0.1,
        help="share of samples trained unconditionally (condition → <pad>), for classifier-free guidance",
    )
    parser.add_argument("--weight-fn", default="log", choices=["log", "linear", "exp_root", "quad_root"])
    parser.add_argument(
        "--freeze-vision", action="store_true", help="also freeze the SigLIP encoder (VQ is always frozen)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out",
        default=None,
        help="where metrics.jsonl, checkpoints/ and the tuned model/ go: a path or a pyarrow URI (s3://…)",
    )
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every K steps (0: none)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest complete checkpoint under --out"
    )
    parser.add_argument(
        "--ray-workers", type=int, default=0, help="train on N Ray Train workers (0: this process only)"
    )
    parser.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per Ray worker (0: CPU, gloo)")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument(
        "--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS or local)"
    )
    parser.add_argument(
        "--fsdp", action="store_true", help="shard the model with FSDP2 instead of DDP (Ray only)"
    )
    parser.add_argument("--grad-checkpointing", action="store_true", help="recompute decoder activations")
    parser.add_argument(
        "--rank-layout",
        type=int,
        default=1,
        help="read the data as W ranks would (one process reproducing a --ray-workers W run's global batches)",
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
    parser.add_argument("--log-ids", action="store_true", help="each rank logs the sample ids of every step")
    parser.add_argument("--halt-after-step", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fsdp and not args.ray_workers:
        parser.error("--fsdp shards over Ray workers: add --ray-workers N")
    if args.ray_workers < 0 or args.grad_accum < 1 or args.rank_layout < 1:
        parser.error("--ray-workers must be >= 0, --grad-accum and --rank-layout >= 1")
    if not 0 <= args.cond_dropout < 1:
        parser.error("--cond-dropout must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Run the tuning; returns one metrics dict per step (also printed as JSON lines)."""
    args = parse_args(argv)
    if args.ray_workers:
        return train_on_ray(args)
    threads = args.threads or (1 if args.tiny else None)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return train(args)
    finally:
        torch.set_num_threads(previous_threads)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
