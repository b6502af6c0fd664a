"""examples/finetune_janus_pro.py --tiny: the single-stage Uni-Edit step on a tiny random Janus trains on CPU."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.unit.synthetic_runs import make_sample, write_run  # noqa: E402
from uniedit_synth.export import export_run  # noqa: E402

pytestmark = pytest.mark.train

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune_janus_pro.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finetune_janus_pro", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    run = write_run(root / "run", [make_sample(i, category=("color", "count")[i % 2]) for i in range(8)])
    export_run(run, root / "hf", "hf", progress=False)
    return root / "hf"


def tiny_args(data: Path, *extra: str, steps: int = 20) -> list[str]:
    return [
        "--tiny",
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--lr",
        "3e-3",
        "--batch-size",
        "4",
        "--seed",
        "0",
        "--device",
        "cpu",
        *extra,
    ]


def test_understanding_loss_is_off_by_default(tiny_export: Path) -> None:
    example = load_example()
    assert example.parse_args(["--data", str(tiny_export)]).und_weight == 0.0
    assert example.parse_args(["--data", str(tiny_export)]).cond_dropout > 0


def test_tiny_single_stage_tuning_lowers_the_loss(tiny_export: Path, tmp_path: Path) -> None:
    example = load_example()
    out = tmp_path / "out"
    history = example.main(tiny_args(tiny_export, "--out", str(out)))
    assert len(history) == 20
    first = statistics.mean(h["loss"] for h in history[:5])
    last = statistics.mean(h["loss"] for h in history[-5:])
    assert last < 0.75 * first, f"loss did not fall clearly: first 5 mean {first:.3f}, last 5 mean {last:.3f}"
    assert all(h["loss_und"] == 0.0 for h in history)  # the paper's recipe: edit data only
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 21))
    assert (out / "model" / "config.json").is_file()


def test_understanding_loss_when_asked(tiny_export: Path) -> None:
    example = load_example()
    history = example.main(tiny_args(tiny_export, "--und-weight", "1.0", "--no-save", steps=12))
    for part in ("loss_gen", "loss_und"):
        assert statistics.mean(h[part] for h in history[-4:]) < statistics.mean(h[part] for h in history[:4])
    assert all(h["loss"] == pytest.approx(h["loss_gen"] + h["loss_und"], rel=1e-6) for h in history)


def test_accumulation_and_checkpointing_keep_the_step(tiny_export: Path) -> None:
    """The same global batch of 4 as 1×4, 2×2 (gradient accumulation), with activation recomputation and with
    DataLoader worker processes: the same steps."""
    example = load_example()
    plain = example.main(tiny_args(tiny_export, steps=6))
    accumulated = example.main(tiny_args(tiny_export, "--grad-accum", "2", steps=6))
    recomputed = example.main(tiny_args(tiny_export, "--grad-checkpointing", steps=6))
    loaded_by_workers = example.main(tiny_args(tiny_export, "--num-workers", "2", steps=6))
    for other in (accumulated, recomputed, loaded_by_workers):
        assert [h["loss"] for h in other] == pytest.approx([h["loss"] for h in plain], rel=1e-4)
    with pytest.raises(example.TrainingError, match="multiple of"):
        example.main(tiny_args(tiny_export, "--grad-accum", "3", steps=1))


def test_generation_loss_is_weighted_by_the_edit_region(tiny_export: Path) -> None:
    example = load_example()
    torch.manual_seed(0)
    args = example.parse_args(["--tiny", "--data", str(tiny_export), "--device", "cpu"])
    setup = example.build(args, torch.device("cpu"))
    setup.model.eval()
    from uniedit_synth.train.loader import EditPairDataset

    dataset = EditPairDataset(tiny_export, image_size=setup.image_size, mask_grid=setup.vq_grid)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["mask"].shape[1:] == (setup.vq_grid, setup.vq_grid)
    assert batch["mask"].any() and not batch["mask"].all() and (batch["weight"] > 1).all()
    with torch.no_grad():
        weighted = example.generation_loss(setup, batch, torch.device("cpu"))
        uniform = example.generation_loss(setup, {**batch, "weight": torch.ones(2)}, torch.device("cpu"))
        doubled = example.generation_loss(
            setup,
            {**batch, "mask": torch.ones_like(batch["mask"]), "weight": torch.full((2,), 2.0)},
            torch.device("cpu"),
        )
    assert doubled.item() == pytest.approx(2 * uniform.item(), rel=1e-5)
    assert weighted.item() > uniform.item()


def load_editor() -> ModuleType:
    load_example()  # the editor imports the fine-tune script by name
    spec = importlib.util.spec_from_file_location(
        "edit_with_janus_pro", EXAMPLE.with_name("edit_with_janus_pro.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tune_save_load_edit_round_trip(tiny_export: Path, tmp_path: Path) -> None:
    """Tiny fine-tune → save → load → edit on CPU: the reloaded weights are the trained ones, bit for bit, and the
    editor writes a valid PNG of the source's size."""
    example, editor = load_example(), load_editor()
    out = tmp_path / "tuned"
    example.main(tiny_args(tiny_export, "--out", str(out), "--save-every", "10", steps=10))
    trained = torch.load(out / "checkpoints" / "step-00000010" / "model.pt", weights_only=True)
    reloaded = example.load_model(out / "model", torch.device("cpu"))
    assert isinstance(reloaded.tokenizer, example.ByteTokenizer)
    state = reloaded.model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[key], trained[key]) for key in trained)

    from tests.unit.synthetic_runs import image_pair

    source = tmp_path / "source.png"
    source.write_bytes(image_pair(3)[0])
    edited = editor.main(
        [
            "--model",
            str(out / "model"),
            "--image",
            str(source),
            "--instruction",
            "Paint it yellow.",
            "--out",
            str(tmp_path / "edited.png"),
            "--device",
            "cpu",
        ]
    )
    from PIL import Image

    with Image.open(edited) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
        image.load()
    native = editor.main(
        [
            "--model",
            str(out / "model"),
            "--image",
            str(source),
            "--instruction",
            "Paint it yellow.",
            "--out",
            str(tmp_path / "native.png"),
            "--native-size",
            "--device",
            "cpu",
        ]
    )
    with Image.open(native) as image:
        assert image.size == (reloaded.image_size, reloaded.image_size)


def test_editor_conditions_as_the_fine_tune_does(tiny_export: Path) -> None:
    """Greedy, unguided sampling with the KV cache reproduces the argmax of the training forward (teacher-forced
    on the sampled tokens): same prompt, same image slots, same positions. Guidance changes the tokens."""
    example, editor = load_example(), load_editor()
    torch.manual_seed(0)
    setup = example.build(example.parse_args(["--tiny", "--data", str(tiny_export)]), torch.device("cpu"))
    setup.model.eval()
    from PIL import Image

    from tests.unit.synthetic_runs import image_pair

    sources = [Image.open(__import__("io").BytesIO(image_pair(i)[0])).convert("RGB") for i in (1, 2)]
    instructions = ["Paint the box yellow.", "Colour the circle red, please."]
    tokens = editor.edit_tokens(setup, sources, instructions, cfg_weight=1.0, temperature=0)
    assert tokens.shape == (2, setup.vq_grid**2)
    prompts = [example.edit_prompt(setup.tokenizer, text, setup.num_image_tokens) for text in instructions]
    ids, mask = example.pad(prompts, setup.tokenizer.pad_token_id, left=True)
    with torch.no_grad():
        logits = example.generation_logits(
            setup.model,
            setup.tokenizer,
            ids,
            mask,
            editor.source_pixels(setup, sources, torch.device("cpu")),
            torch.tensor([True, True]),
            tokens,
        )
    assert torch.equal(logits.argmax(-1), tokens)
    guided = editor.edit_tokens(setup, sources, instructions, cfg_weight=5.0, temperature=0)
    assert not torch.equal(guided, tokens)


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_checkpoints_of_wrapped_models_resume_anywhere(
    wrapper: str, tiny_export: Path, tmp_path: Path
) -> None:
    """Under DDP and FSDP2 (a one-rank gloo group here; Ray runs the same code on N ranks) the steps equal a plain
    run's, and a checkpoint holds full state dicts: resumed wrapped or plain, the losses continue the plain run's."""
    import torch.distributed as dist

    example = load_example()
    reference = example.main(tiny_args(tiny_export, "--no-save", steps=6))
    out = tmp_path / wrapper
    argv = tiny_args(tiny_export, "--out", str(out), "--save-every", "3", "--no-save", steps=6)
    if wrapper == "fsdp":
        argv += ["--fsdp", "--ray-workers", "1"]  # parse-time check only: train() below runs in this process
    args = example.parse_args(argv)
    args.ray_workers = 0
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        wrapped_run = example.train(args, example.Dist(distributed=True))
        (out / "checkpoints" / "step-00000006.complete").unlink()  # back to the step-3 checkpoint
        resumed_wrapped = example.train(_resume(example, argv), example.Dist(distributed=True))
    finally:
        dist.destroy_process_group()
    assert [h["loss"] for h in wrapped_run] == pytest.approx([h["loss"] for h in reference], rel=1e-5)
    assert [h["step"] for h in resumed_wrapped] == [4, 5, 6]
    assert [h["loss"] for h in resumed_wrapped] == pytest.approx([h["loss"] for h in reference[3:]], rel=1e-5)
    (out / "checkpoints" / "step-00000006.complete").unlink()
    plain = example.main(
        tiny_args(tiny_export, "--out", str(out), "--save-every", "3", "--no-save", "--resume", steps=6)
    )
    assert [h["loss"] for h in plain] == pytest.approx([h["loss"] for h in reference[3:]], rel=1e-5)


def _resume(example: ModuleType, argv: list[str]):
    args = example.parse_args([*argv, "--resume"])
    args.ray_workers = 0
    return args
