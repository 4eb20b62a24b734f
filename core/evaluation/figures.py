"""The evaluation report's figures, drawn as PNG bytes with matplotlib's object API and its Agg
canvas (never pyplot, so no GUI backend is touched and the Qt app is not disturbed).

Colours are the Okabe-Ito palette, readable with the common colour-vision deficiencies; the
status grid also writes a letter in each square. The same results give the same bytes: the
style is reset to matplotlib's defaults (ignoring a user's matplotlibrc) and the PNGs carry no
software or date metadata.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from core.evaluation.cells import VERIFICATION, Cell, Evaluation, Setting
from core.evaluation.summary import SummaryRow, mean_std, partition_label

# Okabe & Ito (2008), "Color Universal Design".
BLUE, ORANGE, SKY_BLUE, GREEN, YELLOW, VERMILLION, PURPLE, GREY = (
    "#0072B2", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#D55E00", "#CC79A7", "#999999",
)
DEFENCE_COLOURS = {
    VERIFICATION: BLUE, "fedavg": VERMILLION, "krum": ORANGE, "median": GREEN,
    "trimmed_mean": PURPLE, "fltrust": SKY_BLUE,
}
_SPARE_COLOURS = (YELLOW, GREY, "#000000")
# Status grid: code -> (label, colour, letter); 0 is a hospital with no verdict in that round.
STATUS_STYLE = {
    0: ("no record", "#F2F2F2", ""),
    1: ("accepted", BLUE, "A"),
    2: ("rejected", VERMILLION, "R"),
    3: ("failed", GREY, "F"),
}
_STATUS_CODE = {label: code for code, (label, _, _) in STATUS_STYLE.items()}
_MAX_LETTERED_SQUARES = 600  # per figure: beyond, the letters are too small to read and slow to draw

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.titlesize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "svg.hashsalt": "medfedchain",
}


@dataclass(frozen=True)
class Chart:
    """One rendered figure: `name` is its file name without .png."""

    name: str
    title: str
    caption: str
    png: bytes


def accuracy_chart(evaluation: Evaluation, dataset: str) -> Chart | None:
    """Final accuracy per attack and defence on `dataset` (mean ± std over seeds), one panel per
    partition and malicious fraction, with the reference and clean accuracies as lines; None
    when no cell of `dataset` measured a final accuracy."""
    cells = [c for c in evaluation.cells if c.dataset == dataset and c.final_accuracy is not None]
    if not cells:
        return None
    panels = _variants(evaluation, cells)
    defences = evaluation.defences(cells)
    attacks_in = {
        v: evaluation.ordered("attacks", (c.attack for c in cells if _variant(c) == v)) for v in panels
    }
    widest = max(len(a) for a in attacks_in.values())
    width = min(14.0, max(8.0, 3.5 + widest * (0.22 * len(defences) + 0.5)))
    with _style():
        fig = Figure(figsize=(width, 0.6 + 3.2 * len(panels)), layout="constrained")
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
        for ax, variant in zip(axes, panels, strict=True):
            _accuracy_panel(ax, [c for c in cells if _variant(c) == variant], attacks_in[variant], defences)
            ax.set_title(_variant_label(variant))
        handles = [Patch(color=_defence_colour(d, defences), label=_defence_label(d)) for d in defences] + [
            Line2D([], [], color="black", lw=1.6, label="reference (attackers left out)"),
            Line2D([], [], color="#555555", lw=1.6, ls="--", label="clean (no attacker)"),
        ]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle(f"Final accuracy on {dataset}")
        png = _png(fig)
    return Chart(
        name=f"accuracy-{_slug(dataset)}",
        title=f"Final accuracy on {dataset}",
        caption=(
            f"Final accuracy of the global model on {dataset} after the last round, per attack (groups) "
            "and defence (bars), mean over seeds with the standard deviation as error bar. "
            "'verification' removes the models the majority verification rejects; 'fedavg' keeps every "
            "model, poisoned ones included. The solid line is the reference accuracy (the attackers left "
            "out), the dashed line the clean accuracy (no attacker). The y axis starts above 0 to show "
            "small differences."
        ),
        png=png,
    )


def _accuracy_panel(ax: Axes, cells: list[Cell], attacks: list[str], defences: list[str]) -> None:
    width = 0.8 / len(defences)
    lowest = 1.0
    for j, defence in enumerate(defences):
        of_defence = [c for c in cells if c.defence == defence]
        means, stds = zip(*(mean_std(c.final_accuracy for c in of_defence if c.attack == a) for a in attacks),
                          strict=True)
        x = np.arange(len(attacks)) + (j - (len(defences) - 1) / 2) * width
        shown = [i for i, mean in enumerate(means) if mean is not None]
        ax.bar(x[shown], [means[i] * 100 for i in shown], width, color=_defence_colour(defence, defences),
               edgecolor="white", lw=0.5, yerr=[(stds[i] or 0.0) * 100 for i in shown],
               error_kw={"elinewidth": 0.8, "capsize": 2})
        lowest = min([lowest, *(means[i] - (stds[i] or 0.0) for i in shown)])
    for i, attack in enumerate(attacks):
        of_attack = [c for c in cells if c.attack == attack]
        reference, _ = mean_std(c.reference_accuracy for c in of_attack)
        clean, _ = mean_std(c.clean_accuracy for c in of_attack)
        if reference is not None:
            ax.hlines(reference * 100, i - 0.45, i + 0.45, colors="black", linestyles="solid", lw=1.6)
        if clean is not None:
            ax.hlines(clean * 100, i - 0.45, i + 0.45, colors="#555555", linestyles="dashed", lw=1.6)
        lowest = min([lowest, *(level for level in (reference, clean) if level is not None)])
    ax.set_xticks(range(len(attacks)), attacks, rotation=30 if len(attacks) > 6 else 0)
    ax.set_xlim(-0.5, len(attacks) - 0.5)
    ax.set_ylim(max(0.0, 10 * math.floor(lowest * 10) - 10), 101)
    ax.set_xlabel("Attack")
    ax.set_ylabel("Final accuracy (%)")
    ax.grid(axis="y", alpha=0.3)


def status_chart(evaluation: Evaluation, dataset: str) -> Chart | None:
    """The verification's verdict on each hospital's model in each round on `dataset`, one panel
    per partition, fraction and attack, for the first seed; None without verification cells."""
    cells = [c for c in evaluation.cells if c.dataset == dataset and c.defence == VERIFICATION and c.statuses]
    if not cells:
        return None
    first_seed: dict[Setting, Cell] = {}
    for cell in sorted(cells, key=lambda c: c.seed):
        first_seed.setdefault(cell.setting, cell)
    shown = [first_seed[s] for s in evaluation.settings(cells)]
    hospitals_of = {id(c): _hospitals(c) for c in shown}
    rounds_of = {id(c): max([c.rounds or 0, *(s.round_number for s in c.statuses)]) for c in shown}
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    # The hospitals' names only left of the first column when every panel lists the same ones.
    shared = len({tuple(h) for h in hospitals_of.values()}) == 1
    grid_width = max(1.9, 0.3 * max(rounds_of.values()))
    width = 1.6 + ncols * (grid_width + 0.3) if shared else ncols * (grid_width + 1.9)
    panel_height = 1.2 + 0.28 * max(len(h) for h in hospitals_of.values())
    colours = ListedColormap([STATUS_STYLE[code][1] for code in sorted(STATUS_STYLE)])
    norm = BoundaryNorm([c - 0.5 for c in range(len(STATUS_STYLE) + 1)], colours.N)
    with _style():
        fig = Figure(figsize=(min(16.0, width), 0.8 + panel_height * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        lettered = sum(len(hospitals_of[id(c)]) * rounds_of[id(c)] for c in shown) <= _MAX_LETTERED_SQUARES
        for n, (ax, cell) in enumerate(zip(axes, shown, strict=False)):
            _status_panel(ax, cell, hospitals_of[id(cell)], rounds_of[id(cell)], colours, norm, lettered,
                          named=not shared or n % ncols == 0)
        for ax in axes[len(shown):]:
            ax.set_visible(False)
        used = {int(code) for c in shown
                for code in _status_grid(c, hospitals_of[id(c)], rounds_of[id(c)]).ravel()}
        handles = [Patch(facecolor=STATUS_STYLE[code][1], edgecolor="#BBBBBB",
                         label=f"{STATUS_STYLE[code][0]} ({STATUS_STYLE[code][2]})" if code and lettered
                         else STATUS_STYLE[code][0])
                   for code in sorted(used)]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        fig.suptitle(f"Verification verdict per model and round on {dataset} (first seed)")
        png = _png(fig)
    return Chart(
        name=f"status-{_slug(dataset)}",
        title=f"Verdict per model and round on {dataset}",
        caption=(
            f"Under the verification defence on {dataset}, the verdict on each hospital's model (rows) in "
            "each round (columns), for the first seed of each attack, partition and malicious fraction: "
            "accepted (A), rejected (R) or failed (F; the hospital delivered no usable model). The "
            "attackers' rows are marked; ideally their squares are all R and the others all A."
        ),
        png=png,
    )


def _status_panel(ax: Axes, cell: Cell, hospitals: list[tuple[str, bool]], rounds: int,
                  colours: ListedColormap, norm: BoundaryNorm, lettered: bool, named: bool) -> None:
    grid = _status_grid(cell, hospitals, rounds)
    ax.pcolormesh(np.arange(rounds + 1) - 0.5, np.arange(len(hospitals) + 1) - 0.5, grid, cmap=colours,
                  norm=norm, edgecolors="white", linewidth=1.0)
    ax.invert_yaxis()
    if lettered:
        for (row, col), code in np.ndenumerate(grid):
            if code:
                ax.text(col, row, STATUS_STYLE[int(code)][2], ha="center", va="center", fontsize=7,
                        color="black" if code == 3 else "white", in_layout=False)
    step = max(1, math.ceil(rounds / 15))
    ax.set_xticks(range(0, rounds, step), [str(r + 1) for r in range(0, rounds, step)])
    if named:
        ax.set_yticks(range(len(hospitals)),
                      [f"{name} (attacker)" if malicious else name for name, malicious in hospitals])
        for label, (_, malicious) in zip(ax.get_yticklabels(), hospitals, strict=True):
            if malicious:
                label.set_fontweight("bold")
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("Round")
    ax.set_title(f"{cell.attack}\n{partition_label(cell.partition, cell.alpha)}\n"
                 f"{cell.malicious_fraction:.0%} malicious, seed {cell.seed}")


def _status_grid(cell: Cell, hospitals: list[tuple[str, bool]], rounds: int) -> np.ndarray:
    row_of = {name: i for i, (name, _) in enumerate(hospitals)}
    grid = np.zeros((len(hospitals), rounds), dtype=int)
    for status in cell.statuses:
        grid[row_of[status.hospital], status.round_number - 1] = _STATUS_CODE[status.status]
    return grid


def _hospitals(cell: Cell) -> list[tuple[str, bool]]:
    """(hospital, is an attacker) in natural order: hospital-2 before hospital-10."""
    malicious: dict[str, bool] = {}
    for status in cell.statuses:
        malicious[status.hospital] = malicious.get(status.hospital, False) or status.malicious
    return sorted(malicious.items(), key=lambda item: _natural(item[0]))


def ratio_chart(evaluation: Evaluation, rows: Sequence[SummaryRow]) -> Chart | None:
    """For the verification defence, per dataset and attack: the share of poisoned updates it
    rejected and of honest updates it accepted, over all rounds and seeds; None without rows."""
    verification = [r for r in rows if r["defence"] == VERIFICATION]
    datasets = evaluation.ordered("datasets", (r["dataset"] for r in verification))
    if not datasets:
        return None
    several_fractions = len({r["malicious_fraction"] for r in verification}) > 1
    widest = max(sum(r["dataset"] == d for r in verification) for d in datasets)
    with _style():
        fig = Figure(figsize=(min(14.0, max(6.5, 1.5 + 1.1 * widest)), 0.8 + 3.0 * len(datasets)),
                     layout="constrained")
        axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
        for ax, dataset in zip(axes, datasets, strict=True):
            _ratio_panel(ax, [r for r in verification if r["dataset"] == dataset], several_fractions)
            ax.set_title(dataset)
        handles = [Patch(color=VERMILLION, label="poisoned updates rejected"),
                   Patch(color=BLUE, label="honest updates accepted")]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
        fig.suptitle("Verification: poisoned updates rejected and honest updates accepted")
        png = _png(fig)
    return Chart(
        name="status-ratio",
        title="Share of poisoned updates rejected and honest updates accepted",
        caption=(
            "Under the verification defence, per dataset (panels) and attack and partition (groups): the "
            "percentage of the attackers' updates it rejected and of the honest hospitals' updates it "
            "accepted, over all rounds and seeds. Both are 100 % for a perfect verification; 'n/a' marks "
            "a setting without such updates."
        ),
        png=png,
    )


def _ratio_panel(ax: Axes, rows: list[SummaryRow], several_fractions: bool) -> None:
    def share(part: int | None, total: int | None) -> float:
        return float("nan") if part is None or not total else 100.0 * (1 - part / total)

    x = np.arange(len(rows))
    for offset, colour, values in (
        (-0.2, VERMILLION, [share(r["poisoned_accepted"], r["poisoned_total"]) for r in rows]),
        (0.2, BLUE, [share(r["honest_rejected"], r["honest_total"]) for r in rows]),
    ):
        bars = ax.bar(x + offset, np.nan_to_num(values), 0.4, color=colour)
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.0f}" for v in values],
                     fontsize=8, padding=2)
    labels = [f"{r['attack']}\n{partition_label(r['partition'], r['alpha'])}"
              + (f", {r['malicious_fraction']:.0%}" if several_fractions else "") for r in rows]
    ax.set_xticks(x, labels, rotation=30 if len(rows) > 8 else 0)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("Share of updates (%)")
    ax.grid(axis="y", alpha=0.3)


def _variant(cell: Cell) -> tuple[str, float | None, float]:
    return cell.partition, cell.alpha, cell.malicious_fraction


def _variants(evaluation: Evaluation, cells: list[Cell]) -> list[tuple[str, float | None, float]]:
    """The (partition, α, fraction) panels of `cells`, in the matrix's order."""
    settings = evaluation.settings(cells)
    return list(dict.fromkeys((s.partition, s.alpha, s.malicious_fraction) for s in settings))


def _variant_label(variant: tuple[str, float | None, float]) -> str:
    partition, alpha, fraction = variant
    return f"{partition_label(partition, alpha)}, {fraction:.0%} of the hospitals malicious"


def _defence_label(defence: str) -> str:
    return {VERIFICATION: "verification (poisoned removed)", "fedavg": "fedavg (poisoned kept)"}.get(
        defence, defence)


def _defence_colour(defence: str, defences: list[str]) -> str:
    if defence in DEFENCE_COLOURS:
        return DEFENCE_COLOURS[defence]
    others = [d for d in defences if d not in DEFENCE_COLOURS]
    return _SPARE_COLOURS[others.index(defence) % len(_SPARE_COLOURS)]


def _natural(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _slug(name: str) -> str:
    """A file-name-safe form of a dataset name (which may be a path to the user's own data)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "dataset"


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib's defaults plus ours, whatever the user's matplotlibrc says; restored after."""
    with matplotlib.style.context(_STYLE, after_reset=True):
        yield


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
