"""Persona consistency: is the simulated user the person its profile says, line after line?

Three scores per user line (Abdulhai et al. 2025), aggregated per dialogue and by turn (drift):
prompt-to-line (does the line contradict the persona?), line-to-line (does it contradict the
persona's earlier lines?) and Q&A (asked about its profile at checkpoints, does the simulator answer
as the sampled profile says?), reported beside specificity (profile attributes mentioned), so a
persona that says nothing is not mistaken for a consistent one. Plus the persona axis (a direction
in the simulator's residual stream, after Lu et al. 2026) with activation capping, and the scores
as TRL reward functions.

    import simgen.consistency as sc
    report = sc.check_run("outputs/demo", judge="llm")           # RUN/consistency.parquet + reports/
    report = sc.check_run(run, "llm", ray=RayConfig("auto"))      # the chunks scored on a Ray cluster (cluster.py)
    scored = sc.score_dialogues(turns_frame, judge="llm")        # the same on a frame, writing nothing
    sc.judge_eval("../shared/data/consistency/dev.jsonl", "llm") # how good is the judge?
    with sc.persona_cap(backend, layer=15, threshold=2.0, direction=axis): ...
    reward = sc.make_reward("consistency", judge="llm")          # f(prompts, completions, **kwargs)

Importing this package is cheap (no torch); names load on first use. Modules: judges (Judge ABC,
registry, llm / nli / http), metrics (scores, drift), qa (questions from the profile), axis,
rewards, report (JSON + HTML), evaluate (judge-eval), check (the run-level check). Scoring a local
model and steering it are the backend's (`simgen.backends.Scorer`, backends/scoring.py, steering.py).
"""

from __future__ import annotations

from simgen.lazy import lazy_getattr

# public name -> "module:attribute", resolved on first access
_LAZY = {
    "check_run": "simgen.consistency.check:check_run",
    "score_dialogues": "simgen.consistency.check:score_dialogues",
    "Scored": "simgen.consistency.check:Scored",
    "SIDECAR": "simgen.consistency.check:SIDECAR",
    "ConsistencyConfig": "simgen.consistency.metrics:ConsistencyConfig",
    "Judge": "simgen.consistency.judges:Judge",
    "JudgeError": "simgen.errors:JudgeError",
    "Pair": "simgen.consistency.judges:Pair",
    "Question": "simgen.consistency.judges:Question",
    "load_judge": "simgen.consistency.judges:load_judge",
    "REGISTRY": "simgen.consistency.judges:REGISTRY",
    "judge_eval": "simgen.consistency.evaluate:judge_eval",
    "profile_questions": "simgen.consistency.qa:profile_questions",
    "PersonaAxis": "simgen.backends.steering:PersonaAxis",
    "persona_cap": "simgen.backends.steering:persona_cap",
    "parse_persona_cap": "simgen.backends.steering:parse_persona_cap",
    "fit_axis": "simgen.consistency.axis:fit_axis",
    "make_reward": "simgen.consistency.rewards:make_reward",
    "ConsistencyReward": "simgen.consistency.rewards:ConsistencyReward",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
