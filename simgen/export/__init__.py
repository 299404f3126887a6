"""Exports: a run written for someone else, the Hugging Face Hub or an RL trainer.

    from simgen.export import export_hub, push, export_rl, DialogueStream
    export_hub("outputs/demo", "outputs/demo-hub")                 # a folder `datasets.load_dataset` reads
    push("outputs/demo-hub", "my-org/movie-dialogues")            # private dataset repo
    export_rl("outputs/demo", "outputs/demo-sft", "sft")           # TRL's formats: sft, prompt, dpo, rewards
    for row in DialogueStream(seed=0, kind="prompts"): ...         # fresh dialogues, indefinitely

Every export splits by dialogue and drops duplicates first (splits.py), reads the run lazily and
writes its folder aside, moving it into place only when it is complete (output.py). Importing this
package is cheap: modules load on first use. Modules: splits, output, card, hub, rl, stream.
"""

from __future__ import annotations

from simgen.lazy import lazy_getattr

# public name -> "module:attribute", resolved on first access
_LAZY = {
    "export_hub": "simgen.export.hub:export_hub",
    "push": "simgen.export.hub:push",
    "HubError": "simgen.errors:HubError",
    "export_rl": "simgen.export.rl:export_rl",
    "FORMATS": "simgen.export.rl:FORMATS",
    "DialogueStream": "simgen.export.stream:DialogueStream",
    "SplitConfig": "simgen.export.splits:SplitConfig",
    "select": "simgen.export.splits:select",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
