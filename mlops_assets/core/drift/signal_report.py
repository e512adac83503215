"""Readable sentences and the Markdown table of a retrain signal (see :mod:`.signal`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .signal import DriftSignal, DriftSignalPolicy, SignalTest

TEST_LABELS = {
    "cramervonmises": "Cramér-von Mises",
    "chi2_binned": "chi-square on binned values",
    "max_share_z": "largest standardised share change, exact conditional",
}
CVM_PRECISION = 1e-7  # scipy's limiting CDF is summed to about this absolute accuracy


def format_p(p: float | None, test: str = "") -> str:
    if p is None:
        return "-"
    if test == "cramervonmises" and p < CVM_PRECISION:
        return f"<{CVM_PRECISION:.0e}"
    if p == 0:
        return "<1e-300"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def _subject(t: SignalTest) -> str:
    return {"key": "key feature", "feature": "feature", "prediction": "prediction"}[t.role]


def effect_text(t: SignalTest, comparison: str) -> str:
    """'normalised Wasserstein 0.52 >= 0.1' or "share of 'car' 10.0% -> 21.3% (+11.3 pp >= 5 pp)"."""
    if t.effect is None:
        return f"{t.effect_name} not available"
    if t.kind == "numeric":
        return f"normalised Wasserstein {t.effect:.2f} {comparison} {t.floor:g}"
    ref, cur = t.share_reference or 0.0, t.share_current or 0.0
    return (
        f"share of {t.category!r} {ref:.1%} -> {cur:.1%} "
        f"({(cur - ref) * 100:+.1f} pp {comparison} {t.floor * 100:g} pp)"
    )


def novelty_text(t: SignalTest, comparison: str) -> str:
    """'novel mass 0.24 >= 0.02 (largest excess: 11.74 to 14.25)'."""
    if t.novel_mass is None:
        return "novel mass not available"
    text = f"novel mass {t.novel_mass:.2f} {comparison} {t.novelty_floor:g}"
    if t.novel_region and t.novel_mass > 0:
        text += f" (largest excess: {t.novel_region})"
    return text


def significance_text(t: SignalTest, alpha: float, comparison: str) -> str:
    return (
        f"adjusted p {format_p(t.adjusted_pvalue, t.test)} {comparison} {alpha:g} "
        f"({TEST_LABELS.get(t.test, t.test)}, {t.n_reference:,} vs {t.n_current:,} values)"
    )


def _shifted(t: SignalTest, alpha: float) -> str:
    return (
        f"{_subject(t)} {t.name!r} shifted: {effect_text(t, '>=')}, {novelty_text(t, '>=')}, "
        f"{significance_text(t, alpha, '<')}"
    )


def _near_miss(t: SignalTest, alpha: float) -> str | None:
    """Why a key feature or the prediction did not fire, when one of the two conditions held."""
    if t.pvalue is None:
        return f"{_subject(t)} {t.name!r}: {t.note}"
    if t.significant and t.distance_material and not t.novel:
        return (
            f"{_subject(t)} {t.name!r} changed significantly but into no new ground (the batch "
            f"lies where the reference is dense): {novelty_text(t, '<')}, "
            f"{effect_text(t, '>=')}, {significance_text(t, alpha, '<')}"
        )
    if t.significant and not t.material:
        return (
            f"{_subject(t)} {t.name!r} changed significantly but not materially: "
            f"{effect_text(t, '<')}, {significance_text(t, alpha, '<')}"
        )
    if t.material and not t.significant:
        return (
            f"{_subject(t)} {t.name!r} is not a significant shift at these sizes: "
            f"{effect_text(t, '>=')}, but {significance_text(t, alpha, '>=')}"
        )
    return None


def signal_reasons(
    tests: list[SignalTest], drifted: list[str], share: float, policy: DriftSignalPolicy
) -> tuple[list[str], list[str]]:
    """(reasons the signal fired, notes on what did not fire and why)."""
    reasons: list[str] = []
    notes: list[str] = []
    for t in tests:
        if t.role == "feature":
            continue
        if t.drifted:
            reasons.append(_shifted(t, policy.alpha))
        else:
            note = _near_miss(t, policy.alpha)
            if note:
                notes.append(note)
    n_features = sum(t.role != "prediction" for t in tests)
    if drifted and share >= policy.share_threshold:
        reasons.append(
            f"{len(drifted)} of {n_features} features shifted significantly and materially "
            f"(share {share:.2f} >= {policy.share_threshold:g}): {', '.join(drifted)}"
        )
    if not policy.key_features:
        notes.append("no key features: only the prediction and the share rule can fire")
    return reasons, notes


def _row(t: SignalTest) -> str:
    verdict = "**SHIFT**" if t.drifted else ("not tested" if t.pvalue is None else "ok")
    effect = "-" if t.effect is None else f"{t.effect:.3f}"
    if t.category is not None and t.effect is not None:
        effect += f" ({t.category})"
    novel = "-" if t.novel_mass is None else f"{t.novel_mass:.3f}"
    if t.novel_region and t.novel_mass:
        novel += f" ({t.novel_region})"
    cells = [
        f"`{t.name}`",
        t.role,
        TEST_LABELS.get(t.test, t.test or "-"),
        format_p(t.pvalue, t.test),
        format_p(t.adjusted_pvalue, t.test),
        "yes" if t.significant else "no",
        effect,
        f"{t.floor:g}",
        novel,
        "yes" if t.material else "no",
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| column | role | test | p | adjusted p | significant | effect | floor | novel mass | material "
    "| verdict |\n|---|---|---|---:|---:|---|---:|---:|---:|---|---|"
)


def signal_to_markdown(signal: DriftSignal) -> str:
    status = "RETRAIN" if signal.triggered else "no retrain"
    headline = (
        f"**Retrain signal: {status}.** {len(signal.drifted_features)} features shifted "
        f"significantly and materially (share {signal.drift_share:.2f}, threshold "
        f"{signal.share_threshold:g}); {signal.family_size} tests, false-alarm budget "
        f"alpha {signal.alpha:g} (Holm over key features and prediction, the rest for the share rule)."
    )
    lines = [
        headline,
        "",
        f"Key features: {', '.join(signal.key_features) or 'none'}.",
        "",
        (
            "Material: the effect reaches its floor and the novel mass (the batch's share where "
            f"the reference is thin) reaches {signal.novelty_floor:g}."
        ),
    ]
    if signal.reasons:
        lines += ["", "Why:", ""] + [f"- {r}" for r in signal.reasons]
    if signal.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in signal.notes]
    if signal.tests:
        order = {"key": 0, "prediction": 1, "feature": 2}
        tests = sorted(
            signal.tests,
            key=lambda t: (not t.drifted, order[t.role], t.adjusted_pvalue or 2.0, t.name),
        )
        lines += ["", HEADER] + [_row(t) for t in tests]
    return "\n".join(lines) + "\n"
