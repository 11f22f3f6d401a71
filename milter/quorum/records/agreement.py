"""Agreement between engines: on messages both judged, how often they agree, and Cohen's kappa.

Each engine's answer is reduced to "positive" (spam or infected) or not. Kappa corrects the raw
agreement for the agreement two engines would reach by chance given how often each says positive:
kappa = (p_o - p_e) / (1 - p_e). It is undefined (None) when chance agreement is 1 (both engines
gave one and the same answer on every shared message).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations
from typing import Any

POSITIVE = frozenset({"spam", "infected"})
ANSWERED = frozenset({"clean", "spam", "infected"})


def cohen_kappa(pairs: Iterable[tuple[bool, bool]]) -> float | None:
    n = a_yes = b_yes = agree = 0
    for a, b in pairs:
        n += 1
        a_yes += a
        b_yes += b
        agree += a == b
    if n == 0:
        return None
    p_o = agree / n
    p_e = (a_yes / n) * (b_yes / n) + ((n - a_yes) / n) * ((n - b_yes) / n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def pairwise(judgements: Iterable[Mapping[str, bool]], engines: Iterable[str]) -> list[dict[str, Any]]:
    """For each pair of engines: counts on the messages both answered, and kappa.

    `judgements` holds, per message, engine -> positive for the engines that answered it.
    """
    names = sorted(set(engines))
    rows = list(judgements)
    out = []
    for a, b in combinations(names, 2):
        pairs = [(j[a], j[b]) for j in rows if a in j and b in j]
        both_pos = sum(1 for x, y in pairs if x and y)
        both_neg = sum(1 for x, y in pairs if not x and not y)
        kappa = cohen_kappa(pairs)
        out.append(
            {
                "a": a,
                "b": b,
                "both_judged": len(pairs),
                "agree": both_pos + both_neg,
                "both_positive": both_pos,
                "both_negative": both_neg,
                "only_a": sum(1 for x, y in pairs if x and not y),
                "only_b": sum(1 for x, y in pairs if y and not x),
                "kappa": None if kappa is None else round(kappa, 4),
            }
        )
    return out
