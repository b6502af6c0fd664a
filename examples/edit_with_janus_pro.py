"""Edit an image with a Janus-Pro model tuned by finetune_janus_pro.py, with classifier-free guidance.

transformers' image-mode ``generate`` ignores ``pixel_values``, so it cannot edit. This script conditions exactly
as the fine-tune does (finetune_janus_pro.edit_prompt / condition_embeddings): the source image, resized to the
model's image size, enters through the SigLIP encoder + aligner into the ``<image>`` slots of ``<bos> User: <boi>
<image>*N<eoi>\\n{instruction} Assistant: <boi>``. The unconditional branch is the prompt with every token between
``<bos>`` and the last ``<boi>`` replaced by ``<pad>`` (what the fine-tune's condition dropout trains). Both run
as one batch with a KV cache; each image token is drawn from ``uncond + cfg_weight × (cond − uncond)`` (Janus's
guidance), embedded with ``prepare_embeddings_for_image_generation`` and fed back; the token grid is decoded by
the VQ model and written as a PNG (resized back to the source's size unless ``--native-size``).

Usage::

    python examples/edit_with_janus_pro.py --model /tmp/janus-tiny/model --image source.png \\
        --instruction "Paint the object that answers ... in yellow." --out edited.png
    python examples/edit_with_janus_pro.py --tiny --image source.png --instruction "..." --out edited.png  # smoke
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune_janus_pro as finetune  # noqa: E402

from uniedit_synth.method.masks import to_rgb  # noqa: E402
from uniedit_synth.train.loader import EditItemTransform  # noqa: E402


def source_pixels(setup: finetune.Setup, images: list[Image.Image], device: torch.device) -> torch.Tensor:
    """[B,3,S,S] in [-1, 1]: the loader's own resize and scaling (EditItemTransform)."""
    size = (setup.image_size, setup.image_size)
    tensors = [
        EditItemTransform.to_tensor(to_rgb(image).resize(size, Image.Resampling.BICUBIC)) for image in images
    ]
    return torch.stack(tensors).to(device, dtype=setup.model.dtype)


def _pick(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def edit_tokens(
    setup: finetune.Setup,
    sources: list[Image.Image],
    instructions: list[str],
    *,
    cfg_weight: float = 5.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """[B, grid*grid] image-token ids sampled for each (source, instruction)."""
    model, tokenizer = setup.model, setup.tokenizer
    device = next(model.parameters()).device
    count = len(sources)
    conditional = [finetune.edit_prompt(tokenizer, text, setup.num_image_tokens) for text in instructions]
    unconditional = [finetune.unconditional_prompt(tokenizer, prompt) for prompt in conditional]
    ids, attention = finetune.pad(conditional + unconditional, tokenizer.pad_token_id, left=True)
    ids, attention = ids.to(device), attention.to(device)
    pixels = source_pixels(setup, sources, device)
    keep = torch.tensor([True] * count + [False] * count, device=device)
    embeds = finetune.condition_embeddings(model, tokenizer, ids, torch.cat([pixels, pixels]), keep)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    language_model, head = model.model.language_model, model.model.generation_head
    # the KV cache argument and output: `cache` from transformers 5.2x, `past_key_values` before
    cache_name = (
        "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"
    )
    out = language_model(
        inputs_embeds=embeds, attention_mask=attention, position_ids=positions, use_cache=True
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = []
    for _ in range(setup.vq_grid * setup.vq_grid):
        logits = head(out.last_hidden_state[:, -1]).float()
        cond, uncond = logits[:count], logits[count:]
        chosen = _pick(uncond + cfg_weight * (cond - uncond), temperature, top_k, generator)
        tokens.append(chosen)
        step = model.prepare_embeddings_for_image_generation(torch.cat([chosen, chosen])[:, None])
        attention = torch.cat([attention, attention.new_ones((2 * count, 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = language_model(
            inputs_embeds=step.to(embeds.dtype),
            attention_mask=attention,
            position_ids=positions,
            **{cache_name: getattr(out, cache_name)},
            use_cache=True,
        )
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def decode(setup: finetune.Setup, tokens: torch.Tensor) -> list[Image.Image]:
    pixels = setup.model.decode_image_tokens(tokens).float().clamp(-1, 1)  # [B,H,W,3] in [-1, 1]
    arrays = ((pixels + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(array, mode="RGB") for array in arrays]


def edit_images(
    setup: finetune.Setup,
    sources: list[Image.Image],
    instructions: list[str],
    *,
    native_size: bool = False,
    **sampling: Any,
) -> list[Image.Image]:
    """The edited images, at each source's size (or the model's with native_size)."""
    edited = decode(setup, edit_tokens(setup, sources, instructions, **sampling))
    if native_size:
        return edited
    return [
        image.resize(source.size, Image.Resampling.BICUBIC) if image.size != source.size else image
        for image, source in zip(edited, sources, strict=True)
    ]


def load(args: argparse.Namespace, device: torch.device) -> finetune.Setup:
    if args.tiny:
        torch.manual_seed(args.seed)
        return finetune.build(argparse.Namespace(tiny=True, no_vq_cache=True), device)
    return finetune.load_model(args.model, device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="a model dir saved by finetune_janus_pro.py (<out>/model) or a hub id")
    model.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test, no download)")
    parser.add_argument("--image", required=True, type=Path, help="the source image")
    parser.add_argument("--instruction", required=True)
    parser.add_argument("--out", required=True, type=Path, help="the edited image (PNG)")
    parser.add_argument("--cfg-weight", type=float, default=5.0, help="classifier-free guidance (1: none)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--native-size", action="store_true", help="keep the model's image size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if not args.image.is_file():
        raise finetune.TrainingError(f"no such image: {args.image}")
    device = torch.device(args.device)
    setup = load(args, device)
    setup.model.eval()
    source = to_rgb(args.image.read_bytes())
    source.load()
    (edited,) = edit_images(
        setup,
        [source],
        [args.instruction],
        native_size=args.native_size,
        cfg_weight=args.cfg_weight,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    edited.save(args.out, format="PNG")
    print(f"wrote {args.out} ({edited.width}x{edited.height})")
    return args.out


if __name__ == "__main__":
    finetune.run_cli(main, sys.argv[1:])
