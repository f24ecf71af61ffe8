"""gapbench's dataset grades beside D4RL's MuJoCo v2 datasets of the same name.

A quality label is a promise about returns: ``expert`` should score like D4RL's expert, and
the grades must be ordered. :func:`grade_table` sets each built gapbench dataset's mean
episode return beside D4RL v2's and :func:`ordering_problems` lists every broken order
(``gapbench datasets compare``).

D4RL v2 figures are the per-episode return statistics (mean, std) of D4RL's v2 HDF5 files
for random, medium, medium-replay and expert, as recorded by Decision Transformer
experiment code in public repositories (two independent copies agree to every printed
digit). D4RL v2 ``medium-expert`` is the concatenation of ``medium`` and ``expert``, so its
mean is the episode-weighted mean of the two; those rows are derived (``derived=True``),
with episode counts halfcheetah 1000 + 1000, hopper 2186 + 1027, walker2d 1191 + 1000.
Normalized scores use D4RL's reference scores (``infos.py``, the same for v0-v2).
"""

from __future__ import annotations

from typing import Any

from gapbench.gap_envs.datasets import parse_id
from gapbench.gap_envs.tasks import normalized_score

# Ordered from worst to best: a dataset must not have a lower mean return than the one
# before it (medium-expert may tie expert: half of it is expert data).
GRADE_ORDER = ("random", "medium-replay", "medium", "medium-expert", "expert")

# (task, quality) -> (mean episode return, std or None, derived)
D4RL_V2: dict[tuple[str, str], tuple[float, float | None, bool]] = {
    ("halfcheetah", "random"): (-288.797, 80.431, False),
    ("halfcheetah", "medium-replay"): (3093.286, 1680.69, False),
    ("halfcheetah", "medium"): (4770.335, 355.750, False),
    ("halfcheetah", "medium-expert"): ((1000 * 4770.335 + 1000 * 10656.426) / 2000, None, True),
    ("halfcheetah", "expert"): (10656.426, 441.683, False),
    ("hopper", "random"): (18.399, 17.451, False),
    ("hopper", "medium-replay"): (467.302, 511.03, False),
    ("hopper", "medium"): (1422.056, 378.954, False),
    ("hopper", "medium-expert"): ((2186 * 1422.056 + 1027 * 3511.358) / 3213, None, True),
    ("hopper", "expert"): (3511.358, 328.586, False),
    ("walker2d", "random"): (1.871, 5.813, False),
    ("walker2d", "medium-replay"): (682.701, 895.96, False),
    ("walker2d", "medium"): (2852.088, 1095.443, False),
    ("walker2d", "medium-expert"): ((1191 * 2852.088 + 1000 * 4920.507) / 2191, None, True),
    ("walker2d", "expert"): (4920.507, 136.395, False),
}


def grade_table(cards: list[dict[str, Any]], version: int | None = None) -> list[dict[str, Any]]:
    """One row per (task, quality) among gapbench's dataset ``cards``
    (:func:`gapbench.gap_envs.datasets.list_datasets`): the newest version of each, or
    ``version``, with its return and normalized score beside D4RL v2's."""
    newest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for card in cards:
        parsed = parse_id(card["id"])
        if parsed is None or card.get("problem") or parsed["gap_slug"]:
            continue  # gapbench's, on the nominal real system: what D4RL's datasets are
        v = parsed["version"]
        if version is not None and v != version:
            continue
        key = (parsed["task"], parsed["quality"])
        if key not in newest or v > newest[key][0]:
            newest[key] = (v, card)
    rows = []
    for (task, quality), (_, card) in newest.items():
        ref = D4RL_V2.get((task, quality))
        rows.append(
            {
                "task": task,
                "quality": quality,
                "id": card["id"],
                "size": card.get("size"),
                "episodes": card.get("episodes"),
                "return_mean": card.get("return_mean"),
                "return_std": card.get("return_std"),
                "normalized_score": card.get("normalized_score"),
                "d4rl_return_mean": ref[0] if ref else None,
                "d4rl_return_std": ref[1] if ref else None,
                "d4rl_normalized_score": float(normalized_score(task, ref[0])) if ref else None,
                "d4rl_derived": ref[2] if ref else None,
            }
        )
    rank = {q: i for i, q in enumerate(GRADE_ORDER)}
    return sorted(rows, key=lambda r: (r["task"], rank.get(r["quality"], len(rank))))


def ordering_problems(rows: list[dict[str, Any]]) -> list[str]:
    """Each pair of consecutive grades (``GRADE_ORDER``) of one task whose mean returns are
    out of order, as a sentence; empty when every grade is in order."""
    problems = []
    by_task: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["return_mean"] is not None:
            by_task.setdefault(r["task"], {})[r["quality"]] = float(r["return_mean"])
    for task, means in sorted(by_task.items()):
        present = [q for q in GRADE_ORDER if q in means]
        for lo, hi in zip(present[:-1], present[1:], strict=True):
            tie_ok = (lo, hi) == ("medium-expert", "expert")
            broken = means[lo] > means[hi] if tie_ok else means[lo] >= means[hi]
            if broken:
                problems.append(
                    f"{task}: {lo} returns {means[lo]:.1f} on average, not below "
                    f"{hi}'s {means[hi]:.1f}"
                )
    return problems


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (README "Datasets of graded quality")."""

    def num(x: float | None, spec: str = ".0f") -> str:
        return "-" if x is None else format(x, spec)

    lines = [
        "| task | quality | gapbench id | episodes | return (mean ± std) | normalized "
        "| D4RL v2 return | D4RL v2 normalized |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        approx = "≈" if r["d4rl_derived"] else ""
        d4rl = (
            "-"
            if r["d4rl_return_mean"] is None
            else approx
            + num(r["d4rl_return_mean"])
            + ("" if r["d4rl_return_std"] is None else f" ± {num(r['d4rl_return_std'])}")
        )
        lines.append(
            f"| {r['task']} | {r['quality']} | `{r['id']}` | {num(r['episodes'])} "
            f"| {num(r['return_mean'])} ± {num(r['return_std'])} "
            f"| {num(r['normalized_score'], '.1f')} | {d4rl} "
            f"| {approx}{num(r['d4rl_normalized_score'], '.1f')} |"
        )
    return "\n".join(lines)


__all__ = ["D4RL_V2", "GRADE_ORDER", "grade_table", "markdown", "ordering_problems"]
