"""The staged search of ``repoman tune``: which config to measure next, given the results."""

from __future__ import annotations

from collections.abc import Generator, Sequence

from repoman.tune import space
from repoman.tune.report import Trial, recommend
from repoman.tune.space import RooflinePoint, Settings

UNTUNED = "untuned"
OFF = "off"
BATCH_SIZE = "batch size"
DELAY_PREF = "delay/pref"
INSTANCES = "instances"

LOAD_GUESS_S = 1.0
"""What loading a config is assumed to take until one has been timed."""
MIN_LOAD_S = 0.2

Stages = Generator[tuple[Settings, str], Trial | None, None]


class Search:
    """One run's search: ``next`` says which config to measure, ``record`` what it measured.

    1. the config as it is (``untuned``), and with batching off when it batches (``off``);
    2. with a roofline: each of ``space.batch_candidates`` with no queue delay (``batch size``);
    3. if the best so far batches: ``space.variations`` of it, queue delays and the knee as
       preferred size (``delay/pref``);
    4. two more instance counts of the best so far, at most one per core (``instances``).

    The best so far is the best throughput within the latency budget (else the lowest p99)
    among stage 2 and 3's configs and the config as it is (not batching off); with no
    roofline it is the config as it is. No noise margin there: that guards only the final
    ``pick``. A config asked for again is not measured again. One that no longer fits the
    time left is skipped (named in ``skipped``) and the search goes on to the next.
    """

    def __init__(
        self,
        untuned: Settings,
        roofline: Sequence[RooflinePoint],
        *,
        budget_ms: float,
        max_concurrency: int,
        cores: int,
        trial_s: float,
    ) -> None:
        self.untuned = untuned
        self.roofline = list(roofline)
        self.budget_ms = budget_ms
        self.max_concurrency = max_concurrency
        self.cores = cores
        self.trial_s = trial_s  # measuring one config, loading it not included
        self.load_s = LOAD_GUESS_S
        self.trials: list[Trial] = []
        self.skipped: list[str] = []
        self._stages = self._run()
        self._reply: Trial | None = None  # what the stage asking for a config gets back
        self._pending: Trial | None = None
        self.done = False

    def next(self, left_s: float) -> Trial | None:
        """The next config to measure, as a numbered Trial with no samples yet; None: done.

        ``left_s`` is the time left for measuring; each config needs ``trial_s + load_s``.
        """
        if self._pending is not None:
            raise RuntimeError(f"record trial #{self._pending.number} before asking for another")
        while not self.done:
            try:
                settings, stage = self._stages.send(self._reply)
            except StopIteration:
                self.done = True
                break
            measured = next((t for t in self.trials if t.settings == settings), None)
            if measured is not None:
                self._reply = measured  # asked for again by a later stage: the result stands
                continue
            if left_s < self.trial_s + self.load_s:
                self.skipped.append(settings.describe())
                self._reply = None
                continue
            self._pending = Trial(len(self.trials) + 1, settings, stage)
            return self._pending
        return None

    def record(self, trial: Trial, load_s: float | None) -> None:
        """``trial`` (from ``next``) measured, or failed with its ``error`` set; ``load_s``: how
        long loading it took (None: the load failed)."""
        if trial is not self._pending:
            raise RuntimeError(f"trial #{trial.number} is not the one asked for")
        if load_s is not None:
            # half the last load, half the history: recent loads say most about the next
            self.load_s = max(self.load_s * 0.5 + load_s * 0.5, MIN_LOAD_S)
        self.trials.append(trial)
        self._pending = None
        self._reply = trial

    def _run(self) -> Stages:
        """The stages in order; each ``yield`` asks for one config and gets back its Trial (None
        when it was skipped), so the stages read top to bottom as the search runs them."""
        untuned = self.untuned
        yield untuned, UNTUNED
        if untuned.batching:
            yield Settings(untuned.max_batch_size, False, 0, (), untuned.instances), OFF
        chosen = untuned
        if self.roofline:
            budget_s = self.budget_ms / 1e3
            sizes = space.batch_candidates(self.roofline, budget_s, self.max_concurrency)
            tried: list[Trial | None] = []
            for size in sizes:
                tried.append((yield Settings(size, True, 0, (), untuned.instances), BATCH_SIZE))
            chosen = self._best([*tried, incumbent(self.trials)])
            if chosen.batching:
                for settings in space.variations(self.roofline, chosen, budget_s):
                    tried.append((yield settings, DELAY_PREF))
                chosen = self._best([*tried, incumbent(self.trials)])
        for settings in space.instance_candidates(chosen, self.cores):
            yield settings, INSTANCES

    def _best(self, tried: Sequence[Trial | None]) -> Settings:
        done = [t for t in tried if t is not None]
        best = recommend(done, self.budget_ms) if done else None
        return best.settings if best is not None else self.untuned


def incumbent(trials: Sequence[Trial]) -> Trial | None:
    """The config as it is, when it was measured (it is always the first asked for)."""
    return trials[0] if trials and trials[0].stage == UNTUNED else None


def pick(trials: Sequence[Trial], budget_ms: float) -> Trial | None:
    """The recommendation: ``report.recommend`` with the config as it is as the incumbent, so a
    change must beat it by more than the noise margin."""
    return recommend(trials, budget_ms, incumbent=incumbent(trials))
