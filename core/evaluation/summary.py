"""The evaluation's summary table: one row per setting and defence, aggregated over seeds, with
whether the verification defence met the project's goal. The HTML report, the README table and
the GUI all show these rows."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from core.evaluation.cells import VERIFICATION, Cell, Evaluation, Setting, read_evaluation
from core.federation.aggregators import AGGREGATORS


@dataclass(frozen=True)
class Goal:
    """What the verification defence must achieve in a setting (all of it) to meet the goal:

    - its final accuracy is at most `accuracy_tolerance` below the reference accuracy (the
      federation with the attackers left out), both as means over seeds;
    - where the attack plants a trigger, the backdoor succeeds on at most `max_backdoor` of the
      triggered test samples (mean over seeds), however often the reference federation answers
      the trigger with the target already (a miss names that share);
    - under the partitions in `no_honest_rejected_under` (IID: honest models look alike), no
      honest model is rejected in any round of any seed;
    - its mean final accuracy is at least that of every baseline defence in `baselines` that ran
      in the same setting, both over the seeds both ran.
    """

    accuracy_tolerance: float = 0.01
    max_backdoor: float = 0.05
    no_honest_rejected_under: tuple[str, ...] = ("iid",)
    baselines: tuple[str, ...] = AGGREGATORS


GOAL = Goal()
# Means computed from different sums can differ in the last bits; such a difference is a tie.
_TIE = 1e-9


class SummaryRow(TypedDict):
    """One setting and defence over its seeds. Accuracies are fractions in [0, 1], `gap_points`
    is (final - reference) in percentage points; a mean is None when no seed measured it, a
    standard deviation (sample, n - 1) is None below two measurements. `goal` is None for the
    baselines; `goal_missed` says which criteria a verification row missed, and
    `perfect_filter_missed` which of them a perfect filter would miss in its setting (None for
    the baselines)."""

    dataset: str
    partition: str
    alpha: float | None
    attack: str
    defence: str
    malicious_fraction: float
    seeds: int
    final_mean: float | None
    final_std: float | None
    reference_mean: float | None
    reference_std: float | None
    clean_mean: float | None
    clean_std: float | None
    gap_points: float | None
    poisoned_accepted: int | None
    poisoned_total: int | None
    honest_rejected: int | None
    honest_total: int | None
    backdoor_mean: float | None
    backdoor_std: float | None
    reference_backdoor_mean: float | None
    reference_backdoor_std: float | None
    goal: bool | None
    goal_missed: list[str]
    perfect_filter_missed: list[str] | None


def summary_rows(results: Mapping[str, Any] | Evaluation) -> list[SummaryRow]:
    """The summary table of `results` (results.json as loaded, or already read), in the matrix's
    order: datasets, partitions, fractions, attacks, then defences. Empty without cells."""
    evaluation = results if isinstance(results, Evaluation) else read_evaluation(results)
    by_group: dict[tuple[Setting, str], list[Cell]] = {}
    for cell in evaluation.cells:
        by_group.setdefault((cell.setting, cell.defence), []).append(cell)
    rows = [
        _aggregate(setting, defence, by_group[(setting, defence)])
        for setting in evaluation.settings()
        for defence in evaluation.defences()
        if (setting, defence) in by_group
    ]
    for row in rows:
        if row["defence"] == VERIFICATION:
            setting = _setting_of(row)
            baselines = {d: cells for (s, d), cells in by_group.items() if s == setting and d != VERIFICATION}
            verified = by_group[(setting, VERIFICATION)]
            row["goal_missed"] = _goal_missed(row, verified, baselines)
            row["goal"] = not row["goal_missed"]
            row["perfect_filter_missed"] = perfect_filter_missed(setting, verified, baselines)
    return rows


def perfect_filter_missed(setting: Setting, verified: list[Cell], baselines: Mapping[str, list[Cell]],
                          goal: Goal = GOAL) -> list[str]:
    """The goal's criteria that a perfect filter followed by FedAvg would miss in `setting`: one
    that rejects exactly the attackers' models ends as the reference federation does (its
    accuracy, its answer to the trigger, no honest model rejected). Where it misses one, no
    verification that only decides whom FedAvg takes in can meet it: a baseline ends above the
    federation without the attackers (their updates still carried something useful, or it
    aggregates differently), or the trigger is what the attacker-free model answers anyway."""
    perfect = [replace(c, final_accuracy=c.reference_accuracy, backdoor_success=c.reference_backdoor_success,
                       reference_backdoor_success=None, honest_rejected=0 if c.honest_total is not None else None)
               for c in verified]
    return _goal_missed(_aggregate(setting, VERIFICATION, perfect), perfect, baselines, goal)


def _setting_of(row: SummaryRow) -> Setting:
    return Setting(row["dataset"], row["partition"], row["alpha"], row["attack"], row["malicious_fraction"])


def _aggregate(setting: Setting, defence: str, cells: list[Cell]) -> SummaryRow:
    final_mean, final_std = mean_std(c.final_accuracy for c in cells)
    reference_mean, reference_std = mean_std(c.reference_accuracy for c in cells)
    clean_mean, clean_std = mean_std(c.clean_accuracy for c in cells)
    backdoor_mean, backdoor_std = mean_std(c.backdoor_success for c in cells)
    reference_backdoor_mean, reference_backdoor_std = mean_std(c.reference_backdoor_success for c in cells)
    gap = None if final_mean is None or reference_mean is None else (final_mean - reference_mean) * 100
    return SummaryRow(
        dataset=setting.dataset, partition=setting.partition, alpha=setting.alpha, attack=setting.attack,
        defence=defence, malicious_fraction=setting.malicious_fraction, seeds=len(cells),
        final_mean=final_mean, final_std=final_std, reference_mean=reference_mean,
        reference_std=reference_std, clean_mean=clean_mean, clean_std=clean_std, gap_points=gap,
        poisoned_accepted=_total(c.poisoned_accepted for c in cells),
        poisoned_total=_total(c.poisoned_total for c in cells),
        honest_rejected=_total(c.honest_rejected for c in cells),
        honest_total=_total(c.honest_total for c in cells),
        backdoor_mean=backdoor_mean, backdoor_std=backdoor_std,
        reference_backdoor_mean=reference_backdoor_mean, reference_backdoor_std=reference_backdoor_std,
        goal=None, goal_missed=[], perfect_filter_missed=None,
    )


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the measured values (None ones skipped)."""
    measured = [v for v in values if v is not None and not math.isnan(v)]
    if not measured:
        return None, None
    return statistics.fmean(measured), statistics.stdev(measured) if len(measured) > 1 else None


def _total(values: Iterable[int | None]) -> int | None:
    counted = [v for v in values if v is not None]
    return sum(counted) if counted else None


def _goal_missed(row: SummaryRow, verified: list[Cell], baselines: Mapping[str, list[Cell]],
                 goal: Goal = GOAL) -> list[str]:
    """The goal's criteria that the verification `row` misses, each as a short reason."""
    missed = []
    final, reference = row["final_mean"], row["reference_mean"]
    if final is None or reference is None:
        missed.append("no final accuracy" if final is None else "no reference accuracy")
    elif final < reference - goal.accuracy_tolerance - _TIE:
        missed.append(f"{(reference - final) * 100:.1f} pts below reference")
    if row["backdoor_mean"] is not None and row["backdoor_mean"] > goal.max_backdoor + _TIE:
        reason = f"backdoor {row['backdoor_mean']:.0%} > {goal.max_backdoor:.0%}"
        if row["reference_backdoor_mean"] is not None:
            reason += f" (attacker-free: {row['reference_backdoor_mean']:.0%})"
        missed.append(reason)
    if row["partition"] in goal.no_honest_rejected_under and row["honest_rejected"]:
        missed.append(f"{row['honest_rejected']} honest rejected under {row['partition'].upper()}")
    beaten_by = [defence for defence, cells in baselines.items()
                 if defence in goal.baselines and _beaten(verified, cells)]
    if beaten_by:
        missed.append(f"below {', '.join(beaten_by)}")
    return missed


def _beaten(verified: list[Cell], baseline: list[Cell]) -> bool:
    """Whether the baseline's mean final accuracy beats the verification's over the seeds both
    ran (a baseline run on fewer seeds is compared on those alone)."""
    ours = {c.seed: c.final_accuracy for c in verified if c.final_accuracy is not None}
    theirs = {c.seed: c.final_accuracy for c in baseline if c.final_accuracy is not None}
    common = sorted(ours.keys() & theirs.keys())
    if not common:
        return False
    return statistics.fmean(ours[s] for s in common) < statistics.fmean(theirs[s] for s in common) - _TIE


# -- Formatting shared by the Markdown table and the HTML report --------------------------------

def partition_label(partition: str, alpha: float | None) -> str:
    """'IID' or 'Dirichlet α=0.5'."""
    if partition == "iid":
        return "IID"
    name = partition.capitalize()
    return name if alpha is None else f"{name} α={alpha:g}"


def percent(mean: float | None, std: float | None = None) -> str:
    """A fraction as '95.2 ± 0.4' (percent, one decimal); '–' when not measured."""
    if mean is None:
        return "–"
    return f"{mean * 100:.1f}" if std is None else f"{mean * 100:.1f} ± {std * 100:.1f}"


def ratio(part: int | None, total: int | None) -> str:
    """'3/10', or '–' when not counted."""
    return "–" if part is None or total is None else f"{part}/{total}"


def points(gap: float | None) -> str:
    """A gap in percentage points with its sign: '+0.3', '-2.1'; '–' when unknown."""
    return "–" if gap is None else f"{gap:+.1f}"


def goal_label(row: SummaryRow) -> str:
    """'met', 'not met: <reasons>', or '' for a baseline."""
    if row["goal"] is None:
        return ""
    return _met_label(row["goal_missed"])


def perfect_filter_label(row: SummaryRow) -> str:
    """What a perfect filter would make of the goal in the row's setting; '' for a baseline."""
    missed = row["perfect_filter_missed"]
    return "" if missed is None else _met_label(missed)


def _met_label(missed: list[str]) -> str:
    return "not met: " + "; ".join(missed) if missed else "met"


SUMMARY_HEADERS = (
    "Dataset", "Partition", "Attack", "Malicious", "Defence", "Seeds", "Final (%)", "Reference (%)",
    "Clean (%)", "Gap (pts)", "Poisoned accepted", "Honest rejected", "Backdoor (%)",
    "Backdoor without attackers (%)", "Goal", "Goal of a perfect filter",
)


def summary_cells(row: SummaryRow) -> list[str]:
    """The row's values as text, one per SUMMARY_HEADERS column."""
    return [
        row["dataset"], partition_label(row["partition"], row["alpha"]), row["attack"],
        f"{row['malicious_fraction']:.0%}", row["defence"], str(row["seeds"]),
        percent(row["final_mean"], row["final_std"]), percent(row["reference_mean"], row["reference_std"]),
        percent(row["clean_mean"], row["clean_std"]), points(row["gap_points"]),
        ratio(row["poisoned_accepted"], row["poisoned_total"]),
        ratio(row["honest_rejected"], row["honest_total"]),
        percent(row["backdoor_mean"], row["backdoor_std"]),
        percent(row["reference_backdoor_mean"], row["reference_backdoor_std"]), goal_label(row),
        perfect_filter_label(row),
    ]


def markdown_table(rows: Iterable[SummaryRow]) -> str:
    """The summary rows as a GitHub Markdown table (for the README), accuracies in percent as
    mean ± standard deviation over seeds."""
    lines = [
        _markdown_line(SUMMARY_HEADERS),
        "|" + "|".join("---" if i < 5 else "---:" for i in range(len(SUMMARY_HEADERS) - 2)) + "|---|---|",
    ]
    lines += [_markdown_line(summary_cells(row)) for row in rows]
    return "\n".join(lines) + "\n"


def _markdown_line(texts: Iterable[str]) -> str:
    """One Markdown table line; a '|' inside a text (a dataset path may hold one) is escaped."""
    return "| " + " | ".join(text.replace("|", "\\|") for text in texts) + " |"


def comparison_table(rows: Iterable[SummaryRow]) -> str:
    """Every defence's final accuracy side by side, one line per setting (for the README): the
    reference, then the defences in the rows' order, each as mean ± standard deviation over its
    seeds, "(n=K)" added where a defence ran on other seeds than the setting's most, and the best
    mean (ties included) in bold."""
    by_setting: dict[Setting, dict[str, SummaryRow]] = {}
    for row in rows:
        by_setting.setdefault(_setting_of(row), {})[row["defence"]] = row
    defences = list(dict.fromkeys(d for line in by_setting.values() for d in line))
    headers = ["Dataset", "Partition", "Attack", "Malicious", "Reference (%)", *defences]
    lines = [_markdown_line(headers), "|" + "---|" * 4 + "---:|" * (len(headers) - 4)]
    for setting, line in by_setting.items():
        finals = [r["final_mean"] for r in line.values() if r["final_mean"] is not None]
        best = max(finals, default=None)
        # The reference federation does not depend on the defence: take it over the most seeds.
        reference = max(line.values(), key=lambda r: r["seeds"])
        seeds = reference["seeds"]
        texts = [setting.dataset, partition_label(setting.partition, setting.alpha), setting.attack,
                 f"{setting.malicious_fraction:.0%}", percent(reference["reference_mean"], reference["reference_std"])]
        for defence in defences:
            row = line.get(defence)
            if row is None:
                texts.append("–")
                continue
            text = percent(row["final_mean"], row["final_std"])
            if best is not None and row["final_mean"] is not None and row["final_mean"] >= best - _TIE:
                text = f"**{text}**"
            texts.append(text if row["seeds"] == seeds else f"{text} (n={row['seeds']})")
        lines.append(_markdown_line(texts))
    return "\n".join(lines) + "\n"


def reach_table(rows: Iterable[SummaryRow]) -> str:
    """Per dataset and partition, in how many settings the verification meets the goal, in how
    many a perfect filter would (`perfect_filter_missed`), and in how many of those the
    verification does (for the README): what is left to reach, and what no filter can."""
    counts: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if row["goal"] is None or row["perfect_filter_missed"] is None:
            continue
        reachable = not row["perfect_filter_missed"]
        count = counts.setdefault((row["dataset"], partition_label(row["partition"], row["alpha"])), [0, 0, 0, 0])
        count[0] += 1
        count[1] += row["goal"]
        count[2] += reachable
        count[3] += row["goal"] and reachable
    total = [sum(c[i] for c in counts.values()) for i in range(4)]
    headers = ["Dataset", "Partition", "Settings", "Goal met", "Met by a perfect filter",
               "Goal met where a perfect filter meets it"]
    lines = [_markdown_line(headers), "|---|---|" + "---:|" * (len(headers) - 2)]
    lines += [_markdown_line([dataset, partition, *(str(n) for n in c)]) for (dataset, partition), c in counts.items()]
    lines.append(_markdown_line(["**all**", "", *(f"**{n}**" for n in total)]))
    return "\n".join(lines) + "\n"
