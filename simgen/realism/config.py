"""The realism check's settings: one frozen dataclass, each field with its help text."""

from __future__ import annotations

from dataclasses import dataclass, field

from simgen.errors import ConfigError

DISCRIMINATORS: tuple[str, ...] = ("tfidf", "embedding", "style")


@dataclass(frozen=True)
class RealismConfig:
    """How `simgen.realism.compare` measures realism (defaults are what the CLI uses)."""

    seed: int = field(default=0, metadata={"help": "seed for folds, bootstraps, permutations and k-means"})
    discriminators: tuple[str, ...] = field(
        default=DISCRIMINATORS,
        metadata={"help": "which discriminators to train: tfidf, embedding, style (the ensemble stacks them)"},
    )
    n_folds: int = field(default=5, metadata={"help": "grouped cross-validation folds (a dialogue is never split)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for every confidence interval"})
    n_perm: int = field(default=1000, metadata={"help": "permutations for the distribution-matching p-values"})
    ci: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    attributes: bool = field(default=True, metadata={"help": "run classifier-ensemble distribution matching"})
    mauve_seeds: int = field(default=5, metadata={"help": "k-means seeds averaged in the MAUVE-style score"})
    n_clusters: int = field(default=0, metadata={"help": "embedding clusters for topic/intent proxies; 0 = auto"})
    min_dialogues: int = field(default=50, metadata={"help": "warn when a side has fewer dialogues than this"})
    min_user_turns: int = field(default=200, metadata={"help": "warn when a side has fewer user turns than this"})
    max_dialogues: int = field(
        default=0, metadata={"help": "subsample each side to at most this many dialogues (seeded); 0 = all"}
    )
    n_examples: int = field(default=5, metadata={"help": "most synthetic-looking examples shown"})
    n_giveaways: int = field(default=15, metadata={"help": "giveaway phrases and features shown"})
    use_embeddings: bool = field(
        default=True,
        metadata={"help": "compute sentence embeddings (off: TF-IDF replaces them in attributes; no embedding discriminator)"},
    )
    embedding_batch_size: int = field(default=64, metadata={"help": "sentence-embedding batch size"})

    def __post_init__(self) -> None:
        unknown = [d for d in self.discriminators if d not in DISCRIMINATORS]
        if unknown or not self.discriminators:
            raise ConfigError(
                f"unknown discriminator(s) {unknown}; choose from {', '.join(DISCRIMINATORS)}."
                if unknown
                else "choose at least one discriminator."
            )
        if not self.use_embeddings and "embedding" in self.discriminators:
            raise ConfigError("the embedding discriminator needs use_embeddings=True; drop it or turn embeddings on.")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds must be at least 2, got {self.n_folds}.")
        if not 0.5 < self.ci < 1:
            raise ConfigError(f"ci must lie between 0.5 and 1, got {self.ci}.")
        if self.n_boot < 50 or self.n_perm < 50:
            raise ConfigError("n_boot and n_perm must be at least 50 for a usable interval or p-value.")
