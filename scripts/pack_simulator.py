"""Pack a `simgen tune` LoRA folder for shipping inside a scenario (`profiles/<scenario>.simulator/`).

What changes from the folder `simgen tune` wrote, and nothing else:
- the adapter's tensors are stored in bfloat16 (half the bytes; `simgen.models` merges them into the
  float32 base; on an IARD adapter the rounding moved each merged weight matrix's delta by at most
  0.23%, as a share of the delta's Frobenius norm);
- `adapter_config.json` names the base model by its simgen id, not by the trainer's cache path;
- the card (`simgen_tune.json`) records the packing.
The card's settings say how to retrain it; packing again gives the same bytes.

    python scripts/pack_simulator.py outputs/tuned/movie-matched profiles/movie-recommendation.simulator
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from simgen.copies import COPY_INDEX
from simgen.export.output import staged

ADAPTER, CONFIG, CARD = "adapter_model.safetensors", "adapter_config.json", "simgen_tune.json"


def pack(src: Path, dst: Path) -> None:
    card = json.loads((src / CARD).read_text())
    if card.get("method") != "lora":
        sys.exit(f"{src}: only LoRA folders are packed (method {card.get('method')!r}); a full model is shipped as it is.")
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in sorted(load_file(src / ADAPTER).items())}
    config = json.loads((src / CONFIG).read_text())
    config["base_model_name_or_path"] = card["base_model"]["id"]
    if isinstance(config.get("target_modules"), list):  # peft writes a set, in no fixed order
        config["target_modules"] = sorted(config["target_modules"])
    card["packed"] = {"from": str(src), "dtype": "bfloat16", "by": "scripts/pack_simulator.py"}
    with staged(dst, overwrite=True) as tmp:  # written beside dst, then moved into its place
        save_file(tensors, tmp / ADAPTER, metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
        shutil.copyfile(src / "README.md", tmp / "README.md")
        if (src / COPY_INDEX).is_file():  # the hashed training lines the copy guard reads (folders tuned before it have none:
            shutil.copyfile(src / COPY_INDEX, tmp / COPY_INDEX)  # scripts/copy_index.py adds it)
    print(f"packed {src} -> {dst} ({(dst / ADAPTER).stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a folder `simgen tune` wrote")
    parser.add_argument("dst", type=Path, help="where to write the packed folder (replaced)")
    args = parser.parse_args(argv)
    pack(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
