"""The Verification page: every candidate's verdict and votes, accuracy with and without
verification, the accepted/rejected ratio, and the tested models per dataset side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.model import FEDERATION, TRAINING, AppModel
from app.notifier import report_error
from app.pages.evaluation_report import (
    REPORT_FILE,
    RESULTS_FILE,
    EvaluationReportDialog,
    report_to_open,
    write_report_work,
)
from app.widgets import ACCEPTED, REJECTED, SERIES, EvaluationPanel, percent, plot, short_hash
from app.workers import Task
from core.progress import CancelToken, Progress, ProgressSink
from core.services.training import is_comparison_of, tested_models
from core.state.queries import (
    FederationView,
    RoundView,
    list_federations,
    list_rounds,
    status_ratio,
)

SCORE_KEYS = ("accuracy", "margin", "cosine", "norm")


class VerificationPage(QWidget):
    """Reads one federation run's rounds from SQLite and shows how verification judged them."""

    title = "Verification"

    def __init__(self, model: AppModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._federations: list[FederationView] = []
        self._task: Task | None = None

        self.federation = QComboBox(objectName="verificationFederationCombo")
        self.federation.setMinimumWidth(420)
        self.compare = QPushButton("Compare with unprotected FedAvg", objectName="compareButton")
        self.compare.setToolTip("Runs the same federation again with no verification (every update averaged) "
                                "and records it, to show what the attackers would have done.")
        self.compare_progress = QProgressBar(objectName="compareProgress", minimum=0, maximum=0)
        self.compare_progress.setMaximumWidth(160)
        self.compare_progress.hide()
        self.open_report = QPushButton("Open evaluation report…", objectName="openReportButton")
        self.open_report.setToolTip("Shows the report of a robustness evaluation (`medfedchain evaluate "
                                    "--out DIR`): pick its report.html or results.json.")
        self.report_dialog: EvaluationReportDialog | None = None
        self.summary = QLabel(objectName="verificationSummary")
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Federation run:"))
        top.addWidget(self.federation, 1)
        top.addWidget(self.compare)
        top.addWidget(self.compare_progress)
        top.addWidget(self.open_report)

        self.tree = QTreeWidget(objectName="candidatesTree")
        self.tree.setHeaderLabels(["Round · candidate · vote", "Status", "Votes", "Accuracy",
                                   "Margin", "Cosine", "Norm", "Model"])
        self.tree.headerItem().setToolTip(2, "Accept / reject votes, of all registered hospitals")
        self.tree.headerItem().setToolTip(3, "Mean over the validators: accuracy on their validation splits")
        self.tree.setColumnWidth(0, 200)
        for column, width in ((1, 72), (2, 92), (3, 70), (4, 58), (5, 58), (6, 58)):
            self.tree.setColumnWidth(column, width)
        self.tree.setAlternatingRowColors(True)
        candidates_box = QGroupBox("Candidate models per round (expand a candidate to see each hospital's vote)")
        QVBoxLayout(candidates_box).addWidget(self.tree)

        self.accuracy_plot = plot("Global accuracy per round (held-out test data)", "accuracy", "round")
        self.accuracy_plot.setObjectName("accuracyBars")
        self.accuracy_plot.setYRange(0, 1)
        self.with_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=SERIES[0])
        self.without_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=SERIES[1])
        self.accuracy_plot.addItem(self.with_bars)
        self.accuracy_plot.addItem(self.without_bars)
        self.accuracy_legend = QLabel(objectName="accuracyLegend")
        self.ratio_plot = plot("Candidates accepted and rejected", "candidates", "round")
        self.ratio_plot.setObjectName("ratioBars")
        self.accepted_bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=ACCEPTED.name())
        self.rejected_bars = pg.BarGraphItem(x=[], y0=[], height=[], width=0.6, brush=REJECTED.name())
        self.ratio_plot.addItem(self.accepted_bars)
        self.ratio_plot.addItem(self.rejected_bars)
        for chart in (self.accuracy_plot, self.ratio_plot):
            chart.getPlotItem().legend.hide()  # bar charts get a caption below instead
        self.ratio_label = QLabel(objectName="ratioLabel")
        self.ratio_label.setWordWrap(True)
        charts = QWidget()
        charts_layout = QVBoxLayout(charts)
        charts_layout.setContentsMargins(0, 0, 0, 0)
        charts_layout.addWidget(self.accuracy_plot, 1)
        charts_layout.addWidget(self.accuracy_legend)
        charts_layout.addWidget(self.ratio_plot, 1)
        charts_layout.addWidget(self.ratio_label)

        self.results = QWidget(objectName="resultsRow")
        self.results_layout = QVBoxLayout(self.results)
        self.results_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.results)
        results_box = QGroupBox("Trained and tested models per dataset, side by side (latest test of each)")
        QVBoxLayout(results_box).addWidget(scroll)

        upper = QSplitter()
        upper.addWidget(candidates_box)
        upper.addWidget(charts)
        upper.setSizes([690, 560])
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(upper)
        vertical.addWidget(results_box)
        vertical.setSizes([540, 330])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(vertical, 1)

        self.federation.currentIndexChanged.connect(self._show_selected)
        self.compare.clicked.connect(self._start_comparison)
        self.open_report.clicked.connect(self._pick_report)
        model.federations_changed.connect(self.refresh)
        model.evaluations_changed.connect(self._show_results)
        model.busy_changed.connect(self._update_buttons)
        self.refresh()
        self._show_results()

    # -- which run -------------------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        """Lists the protected runs (comparison runs appear beside the run they compare with)."""
        current = self.federation.currentData()
        self._federations = list_federations(self.model.db)
        shown = [f for f in self._federations if f.config.get("verifier") != "none"] or self._federations
        self.federation.blockSignals(True)
        self.federation.clear()
        for f in shown:
            attackers = sum(1 for h in f.hospitals if h.malicious)
            self.federation.addItem(f"#{f.id} · {f.config.get('dataset', '')} · {len(f.hospitals)} hospitals, "
                                    f"{attackers} attacking ({f.config.get('attack', 'none')}) · {f.status}", f.id)
        index = self.federation.findData(current)
        self.federation.setCurrentIndex(max(index, 0))
        self.federation.blockSignals(False)
        self._show_selected()

    def selected(self) -> FederationView | None:
        federation_id = self.federation.currentData()
        return next((f for f in self._federations if f.id == federation_id), None)

    @Slot()
    def _show_selected(self) -> None:
        federation = self.selected()
        self.tree.clear()
        if federation is None:
            self.summary.setText("No federation run yet: start one on the Federation page.")
            self._plot_accuracy([], [])
            self._plot_ratio(None)
            self._update_buttons()
            return
        rounds = list_rounds(self.model.db, federation.id)
        for round_ in rounds:
            self._add_round(round_)
        comparison = self._comparison(federation)
        without = list_rounds(self.model.db, comparison.id) if comparison else []
        self._plot_accuracy(rounds, without)
        self._plot_ratio(federation)
        attackers = [h.hospital_id for h in federation.hospitals if h.malicious]
        caught = [m for r in rounds for m in r.models if m.malicious and m.status == "rejected"]
        missed = [m for r in rounds for m in r.models if m.malicious and m.status == "accepted"]
        text = f"Run #{federation.id} ({federation.status}): {len(rounds)} round(s). "
        if attackers:
            text += (f"Simulated attackers: {', '.join(attackers)}. Their updates were rejected {len(caught)} "
                     f"time(s) and accepted {len(missed)} time(s). ")
        if comparison is not None:
            text += f"Compared with unprotected run #{comparison.id}."
        else:
            text += "Press “Compare with unprotected FedAvg” to see the accuracy without verification."
        self.summary.setText(text)
        self._update_buttons()

    def _comparison(self, federation: FederationView) -> FederationView | None:
        return next((f for f in self._federations if is_comparison_of(f, federation)), None)

    # -- candidates and votes ----------------------------------------------------------------------

    def _add_round(self, round_: RoundView) -> None:
        accepted = sum(1 for m in round_.models if m.status == "accepted")
        parent = QTreeWidgetItem([f"Round {round_.number}", round_.status, f"{accepted}/{len(round_.models)} accepted",
                                  percent(round_.accuracy), "", "", "", short_hash(round_.global_hash)])
        parent.setToolTip(7, round_.global_hash or "")
        self.tree.addTopLevelItem(parent)
        verdicts = round_.policy_verdicts()
        for m in round_.models:
            means = {k: np.mean([v.scores[k] for v in m.votes if k in v.scores]) if m.votes else None
                     for k in SCORE_KEYS}
            name = m.hospital_name + (" (attacker)" if m.malicious else "")
            child = QTreeWidgetItem([name, m.status, f"{m.accepts} / {m.rejects} of {m.registered}",
                                     *(_score(means[k]) for k in SCORE_KEYS), short_hash(m.model_hash)])
            child.setToolTip(7, m.model_hash)
            child.setData(0, Qt.ItemDataRole.UserRole, m.hospital_id)
            color = ACCEPTED if m.status == "accepted" else REJECTED
            child.setForeground(1, QBrush(color))
            parent.addChild(child)
            for vote in m.votes:
                grandchild = QTreeWidgetItem([f"vote of {vote.validator_id}", "accept" if vote.accept else "reject",
                                              "", *(_score(vote.scores.get(k)) for k in SCORE_KEYS), ""])
                grandchild.setForeground(1, QBrush(ACCEPTED if vote.accept else REJECTED))
                verdict = verdicts.get((vote.validator_id, m.hospital_id))
                if verdict is not None:
                    grandchild.setToolTip(1, _explain(verdict, vote.accept))
                child.addChild(grandchild)
        for failure in round_.failures:
            parent.addChild(QTreeWidgetItem([failure.hospital_id, "failed", failure.stage, "", "", "", "",
                                             failure.message]))
        parent.setExpanded(True)

    # -- charts ----------------------------------------------------------------------------------

    def _plot_accuracy(self, with_rounds: list[RoundView], without_rounds: list[RoundView]) -> None:
        def series(rounds: list[RoundView]) -> tuple[list[int], list[float]]:
            points = [(r.number, r.accuracy) for r in rounds if r.status == "finalized" and r.accuracy is not None]
            return [p[0] for p in points], [float(p[1]) for p in points]

        x_with, y_with = series(with_rounds)
        x_without, y_without = series(without_rounds)
        offset = 0.2 if x_without else 0.0
        self.with_bars.setOpts(x=np.array(x_with, dtype=float) - offset, height=y_with,
                               width=0.38 if x_without else 0.6)
        self.without_bars.setOpts(x=np.array(x_without, dtype=float) + offset, height=y_without, width=0.38)
        self.without_bars.setVisible(bool(x_without))
        legend = f"{_swatch(SERIES[0])} with verification (poisoned updates removed)"
        if x_without:
            legend += f"&nbsp;&nbsp; {_swatch(SERIES[1])} without verification (unprotected FedAvg)"
        self.accuracy_legend.setText(legend)
        rounds = sorted(set(x_with) | set(x_without))
        self.accuracy_plot.getAxis("bottom").setTicks([[(n, str(n)) for n in rounds]])
        if rounds:
            self.accuracy_plot.setXRange(min(rounds) - 0.6, max(rounds) + 0.6)

    def _plot_ratio(self, federation: FederationView | None) -> None:
        if federation is None:
            self.accepted_bars.setOpts(x=[], height=[])
            self.rejected_bars.setOpts(x=[], y0=[], height=[])
            self.ratio_label.setText("")
            return
        ratio = status_ratio(self.model.db, federation.id)
        numbers = sorted(ratio.per_round)
        accepted = [ratio.per_round[n].accepted for n in numbers]
        rejected = [ratio.per_round[n].rejected for n in numbers]
        self.accepted_bars.setOpts(x=numbers, height=accepted, width=0.6)
        self.rejected_bars.setOpts(x=numbers, y0=accepted, height=rejected, width=0.6)
        self.ratio_plot.getAxis("bottom").setTicks([[(n, str(n)) for n in numbers]])
        if numbers:
            self.ratio_plot.setXRange(min(numbers) - 0.6, max(numbers) + 0.6)
        overall = ratio.overall
        self.ratio_label.setText(
            f"{_swatch(ACCEPTED.name())} accepted &nbsp; {_swatch(REJECTED.name())} rejected. "
            f"Overall (finalised rounds): {overall.accepted} accepted, {overall.rejected} rejected"
            + (f", {overall.failed} failed" if overall.failed else "")
            + (f" — {percent(overall.accepted_ratio)} accepted." if overall.accepted_ratio is not None else ".")
        )

    # -- tested models per dataset -------------------------------------------------------------------

    @Slot()
    def _show_results(self) -> None:
        """Per dataset, the model trained here alone beside the federation's global model."""
        while self.results_layout.count():
            widget = self.results_layout.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        tested = tested_models(self.model.db)
        if not tested:
            self.results_layout.addWidget(QLabel("No model has been tested yet: train one on the Training page "
                                                 "or run a federation."))
            return
        for entry in tested:
            box = QGroupBox(entry.dataset_name, objectName=f"results_{entry.dataset_name}")
            row = QHBoxLayout(box)
            local = EvaluationPanel("Trained on this hospital's data only")
            local.setObjectName("localResult")
            if entry.local is not None:
                local.set_evaluation(entry.local, origin=f"training run #{entry.local.run_id}")
            federated = EvaluationPanel("Federated global model")
            federated.setObjectName("federatedResult")
            if entry.federated is not None:
                federated.set_evaluation(entry.federated, origin=f"federation #{entry.federated.federation_id}, "
                                         f"after round {entry.federated.round_number}")
            row.addWidget(local)
            row.addWidget(federated)
            self.results_layout.addWidget(box)

    # -- evaluation report -----------------------------------------------------------------------

    @Slot()
    def _pick_report(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an evaluation report", str(Path.home()),
                                              f"Evaluation report ({REPORT_FILE} {RESULTS_FILE});;All files (*)")
        if path:
            self.show_report(Path(path))

    def show_report(self, picked: Path) -> None:
        """Opens the report `picked` stands for, writing it first from its results.json if needed."""
        try:
            report, stale = report_to_open(picked)
        except Exception as exc:  # noqa: BLE001 - a bad pick is the user's to see, not a crash
            report_error(self, "No evaluation report there", exc)
            return
        if not stale:
            self._open_report(report)
            return
        task = self.model.run("evaluation report", write_report_work(report.with_name(RESULTS_FILE)))
        task.succeeded.connect(self._open_report)
        task.failed.connect(self._report_failed)
        task.done.connect(self._report_written)
        self.open_report.setEnabled(False)
        self.model.start(task)

    @Slot(object)
    def _report_failed(self, exc: BaseException) -> None:
        report_error(self, "The evaluation report could not be written", exc)

    @Slot()
    def _report_written(self) -> None:
        self.open_report.setEnabled(True)

    @Slot(object)
    def _open_report(self, report: Path) -> None:
        try:
            dialog = EvaluationReportDialog(report, self)
        except Exception as exc:  # noqa: BLE001 - an unreadable file gets a dialog saying so
            report_error(self, "The evaluation report cannot be shown", exc)
            return
        self.report_dialog = dialog
        dialog.show()

    # -- comparison run --------------------------------------------------------------------------

    @Slot()
    def _start_comparison(self) -> None:
        federation = self.selected()
        if federation is None:
            return
        db, settings, federation_id = self.model.db, self.model.settings, federation.id

        def work(progress: ProgressSink, cancel: CancelToken) -> int:
            from core.services.training import run_comparison

            return run_comparison(db, settings, federation_id, progress, cancel)

        task = self.model.run(FEDERATION, work)
        task.progressed.connect(self._comparison_progress)
        task.succeeded.connect(self._comparison_finished)
        task.failed.connect(self._comparison_failed)
        task.done.connect(self._comparison_done)
        self._task = task
        self.compare_progress.show()
        self.compare.setText("Cancel comparison")
        self.compare.clicked.disconnect(self._start_comparison)
        self.compare.clicked.connect(self._cancel_comparison)
        self.model.start(task)

    @Slot(object)
    def _comparison_progress(self, event: Progress) -> None:
        if not event.values:
            where = f"round {event.round_number}: " if event.round_number else ""
            self.compare_progress.setFormat(f"{where}{event.stage.value}")
            self.compare_progress.setToolTip(event.message)

    @Slot()
    def _cancel_comparison(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @Slot(object)
    def _comparison_finished(self, comparison_id: int) -> None:
        self.model.federations_changed.emit()
        self.model.evaluations_changed.emit()

    @Slot(object)
    def _comparison_failed(self, exc: BaseException) -> None:
        report_error(self, "The comparison run stopped", exc)

    @Slot()
    def _comparison_done(self) -> None:
        self._task = None
        self.compare_progress.hide()
        self.compare.setText("Compare with unprotected FedAvg")
        self.compare.clicked.disconnect(self._cancel_comparison)
        self.compare.clicked.connect(self._start_comparison)
        self._update_buttons()

    @Slot()
    def _update_buttons(self) -> None:
        if self._task is not None:
            self.compare.setEnabled(True)
            return
        federation = self.selected()
        self.compare.setEnabled(federation is not None and federation.rounds_finalized > 0
                                and not self.model.is_busy(FEDERATION) and not self.model.is_busy(TRAINING))


def _swatch(color: str) -> str:
    return f"<span style='color:{color}; font-size:14pt'>■</span>"


def _score(value: float | None) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _explain(reasons: list[str], accepted: bool) -> str:
    """What the round's policy makes of a vote's scores, for the vote's tooltip."""
    verdict = ("The round's policy accepts these scores." if not reasons
               else "The round's policy rejects these scores: " + "; ".join(reasons) + ".")
    if accepted == (not reasons):
        return verdict
    return verdict + " This vote went the other way (the ledger audit flags a vote its policy does not give)."
