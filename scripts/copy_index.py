"""Write a `simgen tune` folder's copy index (`trained_lines.npz`) from the corpus it was tuned on.

`simgen tune` writes the index itself; this adds it to a folder tuned before it did (the shipped
`profiles/movie-recommendation.simulator`). It reads the card's corpus and roles, takes the same
train split (`simgen.corpora`, a hash of the dialogue id) and stores the hashes of its lines and
their word 4-grams (`simgen.copies`), never the text. The same corpus gives the same bytes.

    python scripts/copy_index.py profiles/movie-recommendation.simulator --corpus ../shared/data/iard
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simgen.corpora import load_corpus
from simgen.tune import CARD, write_copy_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder `simgen tune` wrote (or scripts/pack_simulator.py packed)")
    parser.add_argument("--corpus", required=True, help="the corpus it was tuned on (its card's `corpus.source`)")
    args = parser.parse_args(argv)
    card = json.loads((args.folder / CARD).read_text())
    if card.get("settings", {}).get("max_dialogues"):
        sys.exit(f"{args.folder}: tuned on a sample of the train split (max_dialogues); its lines cannot be told from the card.")
    train = load_corpus(args.corpus, split="train")
    if train.n_dialogues != card["corpus"]["dialogues"]["train"]:
        sys.exit(f"{args.corpus}: {train.n_dialogues} train dialogues, the card says {card['corpus']['dialogues']['train']}: not the corpus it was tuned on.")
    path = write_copy_index(args.folder, train, card.get("roles", "user"))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
