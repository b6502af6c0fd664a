"""Tiny copies of KRIS-Bench, RISEBench, GEdit-Bench and ImgEdit-Bench in their real layouts (generated, a few
items each), and a fake judge reply that fills each preset's score fields deterministically from the request.

Layouts as the benchmarks ship them (see uniedit_synth/sources/benchmarks.py):
KRIS `<category>/annotation.json` + images; RISE `datav2_total_w_subtask.json` + `data/<cat>_images/`;
GEdit the HF parquet (key, task_type, instruction, instruction_language, input_image struct, Intersection_exist);
ImgEdit `basic_edit.json` + `singleturn/<id>`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw


def picture(n: int, size: tuple[int, int] = (48, 40)) -> bytes:
    image = Image.new("RGB", size, ((n * 53) % 256, (n * 97) % 256, (n * 31) % 256))
    ImageDraw.Draw(image).rectangle((4 + n % 7, 4, 20 + n % 9, 24), fill=(255 - (n * 13) % 256, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_kris(root: Path) -> Path:
    entries = {
        "color_change": [("1", "Change the colour of the car to blue.", "")],
        "chemistry": [("1", "Show the iron nail after a month in salt water.", "Iron rusts: reddish-brown oxide."),
                      ("2", "Show what the copper roof looks like after decades.", "Copper forms green patina.")],
        "anomaly_correction": [("3", "Correct the unreasonable parts in the image.", "A clock has 12 numbers.")],
    }
    n = 0
    for category, rows in entries.items():
        folder = root / category
        folder.mkdir(parents=True, exist_ok=True)
        annotation = {}
        for image_id, instruction, explain in rows:
            n += 1
            (folder / f"{image_id}.png").write_bytes(picture(n))
            annotation[image_id] = {"ori_img": f"{image_id}.png", "ins_en": instruction, "explain": explain}
        (folder / "annotation.json").write_text(json.dumps(annotation))
    return root


def write_rise(root: Path) -> Path:
    rows = [
        {"index": "temporal_reasoning_1", "category": "temporal_reasoning", "subtask": "Life Progression",
         "instruction": "Draw it after a year.", "image": "temporal_reasoning_images/1.png",
         "reference": "Rotten, blackened banana."},
        {"index": "causal_reasoning_1", "category": "causal_reasoning", "subtask": "State Transition",
         "instruction": "Show it after heating.", "image": "causal_reasoning_images/1.png",
         "reference": "Melted ice.", "reasoning_img": "yes"},
        {"index": "causal_reasoning_2", "category": "causal_reasoning", "subtask": "State Transition",
         "instruction": "Show the glass after it falls.", "image": "causal_reasoning_images/2.png",
         "reference": "Broken glass.", "consistency_free": True},
        {"index": "spatial_reasoning_1", "category": "spatial_reasoning", "subtask": "Component Assembly",
         "instruction": "Assemble the parts.", "image": "spatial_reasoning_images/1.png",
         "reference_img": "spatial_reasoning_images/1_ref.png"},
        {"index": "logical_reasoning_1", "category": "logical_reasoning", "subtask": "Puzzle Solving",
         "instruction": "Solve the maze in blue.", "image": "logical_reasoning_images/1.png",
         "reference_img": "logical_reasoning_images/1_ref.png"},
        {"index": "logical_reasoning_2", "category": "logical_reasoning", "subtask": "Mathematical Derivation",
         "instruction": "Write the answer.", "image": "logical_reasoning_images/2.png", "reference_txt": "42"},
    ]
    n = 100
    for row in rows:
        for key in ("image", "reference_img"):
            if key in row:
                n += 1
                path = root / "data" / row[key]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(picture(n))
    (root / "datav2_total_w_subtask.json").write_text(json.dumps(rows))
    return root


def write_gedit(root: Path) -> Path:
    rows = []
    for n, (task, language, both) in enumerate([("color_alter", "en", True), ("color_alter", "cn", True),
                                                ("subject-add", "en", False), ("subject-add", "en", True),
                                                ("style_change", "en", True)]):
        image = picture(200 + n)
        rows.append({"key": f"k{n // 2}" if n < 2 else f"k{n}", "task_type": task, "instruction": f"edit number {n}",
                     "instruction_language": language, "input_image": {"bytes": image, "path": f"{n}.png"},
                     "input_image_raw": {"bytes": image, "path": f"{n}.png"}, "Intersection_exist": both})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("task_type", pa.string()), ("key", pa.string()), ("instruction", pa.string()),
                        ("instruction_language", pa.string()), ("input_image", image_type),
                        ("input_image_raw", image_type), ("Intersection_exist", pa.bool_())])
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "data" / "train-00000-of-00001.parquet")
    return root


def write_imgedit(root: Path) -> Path:
    entries = {"1082": ("animal/000342021.png", "Replace the tortoise with a cat.", "replace"),
               "673": ("style/000278574.png", "Transfer the image into ukiyo-e style.", "style"),
               "12": ("animal/000047206.png", "Add a hat to the dog.", "add"),
               "99": ("objects/000000099.png", "Extract the cup.", "extract")}
    for n, (rel, _prompt, _kind) in enumerate(entries.values()):
        path = root / "singleturn" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(picture(300 + n))
    annotation = {key: {"id": rel, "prompt": prompt, "edit_type": kind} for key, (rel, prompt, kind) in entries.items()}
    (root / "basic_edit.json").write_text(json.dumps(annotation))
    return root


WRITERS = {"kris-bench": write_kris, "risebench": write_rise, "gedit-bench": write_gedit, "imgedit-bench": write_imgedit}


def _value(seed: str, low: int, high: int) -> int:
    return low + int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % (high - low + 1)


def judge_content(body: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid judge reply whose scores depend on the whole request (prompt and images), so two editors'
    edits get different scores and a test can recompute the reply from the recorded request."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    seed = json.dumps(body.get("messages"), sort_keys=True)
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("type") == "array":
            items = prop.get("items") or {}
            out[name] = [_value(f"{seed}/{name}/{i}", items.get("minimum", 0), items.get("maximum", 10))
                         for i in range(2)]
        elif prop.get("type") == "integer":
            low, high = prop.get("minimum", 1), prop.get("maximum", 5)
            # lean high so that RISEBench's full-marks rule fires now and then
            out[name] = min(high, _value(f"{seed}/{name}", low, high + 2))
        else:
            out[name] = "fake judge: the edit was inspected"
    return out
