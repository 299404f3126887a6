"""Blend two tuned simulators in weight space: one LoRA adapter whose weight change is exactly
(1 - w) x A's + w x B's (WiSE-FT, Wortsman et al. 2022: weight-space ensembles of a model and its
fine-tuned version keep more of what the first knew, at part of the second's gain).

Both folders are `simgen tune` LoRA folders (packed or not) of the same base model, sides and
target modules. The blend concatenates the two adapters (rank rA + rB): its lora_A stacks A's and
B's lora_A, its lora_B places each side's lora_B scaled by its weight and its own alpha / r, so
`simgen.models` merges it into the base like any adapter and gets the blend, with no rounding
beyond the adapters' own (bfloat16, as `scripts/pack_simulator.py` stores them). The card is B's,
with a `blend` entry naming both folders and their weights and holding both cards (how to train
each again); the copy guard's index (`trained_lines.npz`) holds the lines of both. Blending again
gives the same bytes.

    python scripts/blend_simulators.py profiles/chitchat.simulator outputs/tuned/chitchat-rules --weight 0.5 \\
        outputs/tuned/chitchat-blend50.simulator
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from simgen.copies import COPY_INDEX, CopyIndex
from simgen.export.output import staged

ADAPTER, CONFIG, CARD = "adapter_model.safetensors", "adapter_config.json", "simgen_tune.json"


def _read(folder: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(card, adapter config, tensors) of a LoRA folder; SystemExit naming the file when it is not one."""
    try:
        card = json.loads((folder / CARD).read_text())
        config = json.loads((folder / CONFIG).read_text())
        tensors = load_file(folder / ADAPTER)
    except Exception as e:  # noqa: BLE001 - a missing or unreadable file: the user's folder, named below
        sys.exit(f"{folder}: not a `simgen tune` LoRA folder ({e}).")
    if card.get("method") != "lora":
        sys.exit(f"{folder}: only LoRA folders blend (its card says method {card.get('method')!r}).")
    if config.get("use_dora") or config.get("use_rslora") or config.get("modules_to_save"):
        sys.exit(f"{folder / CONFIG}: DoRA, rsLoRA and modules_to_save are not blended; only plain LoRA adapters.")
    return card, config, tensors


def blend(a: Path, b: Path, weight: float, out: Path) -> None:
    if not 0 <= weight <= 1:
        sys.exit(f"--weight must be in [0, 1] (the share of {b}), got {weight}.")
    card_a, config_a, ta = _read(a)
    card_b, config_b, tb = _read(b)
    for what, va, vb in [("base model fingerprint", card_a["base_model"].get("fingerprint"), card_b["base_model"].get("fingerprint")),
                         ("roles", card_a.get("roles"), card_b.get("roles")),
                         ("target modules", sorted(config_a["target_modules"]), sorted(config_b["target_modules"])),
                         ("tensor names", sorted(ta), sorted(tb))]:
        if va != vb:
            sys.exit(f"{a} and {b} differ in {what} ({va!r} vs {vb!r}); only adapters of one base, sides and modules blend.")
    rank = config_a["r"] + config_b["r"]
    alpha = rank  # the blend's own scale alpha / r is 1; each side's scale goes into its lora_B
    scales = ((1 - weight) * config_a["lora_alpha"] / config_a["r"], weight * config_b["lora_alpha"] / config_b["r"])
    tensors = {}
    for name in sorted(ta):
        if ".lora_A." in name:
            tensors[name] = torch.cat([ta[name].float(), tb[name].float()], dim=0)
        elif ".lora_B." in name:
            tensors[name] = torch.cat([scales[0] * ta[name].float(), scales[1] * tb[name].float()], dim=1)
        else:
            sys.exit(f"{a / ADAPTER}: tensor {name!r} is neither lora_A nor lora_B; only plain LoRA adapters blend.")
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    config = {**config_b, "r": rank, "lora_alpha": alpha, "target_modules": sorted(config_b["target_modules"]),
              "base_model_name_or_path": card_b["base_model"]["id"]}
    card = {**card_b, "blend": {"weights": {str(a): round(1 - weight, 6), str(b): round(weight, 6)}, "rank": rank,
                                "by": "scripts/blend_simulators.py", "cards": {str(a): card_a, str(b): card_b}}}
    card.pop("packed", None)
    with staged(out, overwrite=True) as tmp:  # written beside out, then moved into its place
        save_file(tensors, tmp / ADAPTER, metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "README.md").write_text(
            f"# A blend of two tuned simulators\n\n(1 - w) x `{a}` + w x `{b}` in weight space, w = {weight:g} "
            f"(`scripts/blend_simulators.py`). Each one's own card says how it was trained:\n\n"
            f"- {a}: {card_a['corpus']['source']}, {card_a.get('steps')} steps, examples sha256 {card_a['corpus']['examples_sha256'][:16]}\n"
            f"- {b}: {card_b['corpus']['source']}, {card_b.get('steps')} steps, examples sha256 {card_b['corpus']['examples_sha256'][:16]}\n")
        indices = [CopyIndex.load(f / COPY_INDEX) for f in (a, b) if (f / COPY_INDEX).is_file()]
        if indices:
            CopyIndex.union(indices).save(tmp / COPY_INDEX)
        if len(indices) == 1:
            print(f"note: only one of {a} and {b} has {COPY_INDEX}; the blend's copy guard knows that one's lines only "
                  "(scripts/copy_index.py builds the other's from its corpus)", file=sys.stderr)
    print(f"blended {1 - weight:g} x {a} + {weight:g} x {b} -> {out} (rank {rank}, {(out / ADAPTER).stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="a `simgen tune` LoRA folder (weight 1 - w)")
    parser.add_argument("b", type=Path, help="another, of the same base model and sides (weight w; the blend keeps its card)")
    parser.add_argument("out", type=Path, help="where to write the blend (replaced)")
    parser.add_argument("--weight", type=float, required=True, help="w, the share of b in [0, 1]")
    args = parser.parse_args(argv)
    blend(args.a, args.b, args.weight, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
