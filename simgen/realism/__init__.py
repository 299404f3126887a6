"""Realism checks: can discriminators tell synthetic dialogues from real ones, and do classifier
ensembles see the same distribution of intents, sentiment, topics and lengths?

    from simgen.realism import compare
    report = compare("outputs/demo", reference="chitchat", out="outputs/demo/realism")
    report["auc"], report["auc_ci"]          # ensemble discriminator ROC-AUC, 95% CI
    report["attributes"]["intent"]["jsd"]    # divergence, bias-corrected value, CI, p-value

Modules: `features` (units, style features), `embed` (cached sentence embeddings),
`discriminators` (classifier two-sample test), `distribution` (attribute matching, MAUVE-style
score), `stats` (AUC/divergence intervals), `distort` (known distortions for calibration),
`report` (`compare`), `html` (the page), `cluster` (the embeddings on a Ray cluster: `--ray`). Importing this package is cheap: scikit-learn,
sentence-transformers and torch load when `compare` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["RealismConfig", "compare"]

if TYPE_CHECKING:  # pragma: no cover
    from simgen.realism.config import RealismConfig
    from simgen.realism.report import compare


def __getattr__(name: str) -> Any:
    if name == "compare":
        from simgen.realism.report import compare

        return compare
    if name == "RealismConfig":
        from simgen.realism.config import RealismConfig

        return RealismConfig
    raise AttributeError(f"module 'simgen.realism' has no attribute {name!r}")
