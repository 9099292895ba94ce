"""The model for one run, as both engines use it: loaded where the plan places it, prompts
rendered, concept vectors computed and held, trials turned into seeds and deltas, finished
work handed over, and the out-of-memory back-off.

The generation engine (`generator.Generator`) and the logit engine (`logit.LogitEngine`) each
compose one `ModelSession`; what differs between them (a decode engine, one forward pass a
trial) stays in their own modules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

from introspectd.errors import BadInput
from introspectd.generate.arms import arm_delta
from introspectd.generate.fallback import one_line
from introspectd.generate.interface import GeneratorSpec, WorkSource
from introspectd.generate.placement import Placement
from introspectd.generate.runner import Runner
from introspectd.protocol.prompt_battery import run_prompts, trial_marker
from introspectd.protocol.prompts import conversation, numbers_trials
from introspectd.protocol.results import Generation, VectorTable
from introspectd.protocol.trials import Trial, TrialSpec, trial_seed

# A rendered prompt: its name and the trial index it numbers (None: the same for every trial).
PromptKey = tuple[str, int | None]

log = logging.getLogger("introspectd")


JUDGE_CPU_S_PER_TRIAL = 0.0027  # judge CPU per judged trial (bench/judge_cpu.py: 2.5-3.4 ms)


class CoreSharing:
    """On a CPU run, leaves one core to the judge child once it needs a quarter of one.

    The judge child grades every trial as it is generated, so its CPU need grows with the
    generation rate. With every core in torch's intra-op pool, the pool's spinning threads and
    the judge fight over the CPU: on the 2-vCPU VM a judged tiny-model run (~180 trials/s
    while judging, ~0.35 of a core for the judge) went 25% faster with one thread fewer, while
    a 37M-parameter model (~15 trials/s) lost a third of its speed with one thread fewer.
    """

    WINDOW_S = 1.0
    THRESHOLD_CORES = 0.25

    def __init__(self, is_active: bool) -> None:
        self.is_active = is_active
        self._window_start: float | None = None
        self._num_finished = 0

    def on_finished(self, num_trials: int, now: float) -> None:
        if not self.is_active:
            return
        if self._window_start is None:
            self._window_start = now
            return
        self._num_finished += num_trials
        elapsed = now - self._window_start
        if elapsed < self.WINDOW_S:
            return
        rate = self._num_finished / elapsed
        if rate * JUDGE_CPU_S_PER_TRIAL >= self.THRESHOLD_CORES:
            torch.set_num_threads(max(1, torch.get_num_threads() - 1))
            self.is_active = False  # once: the lower rate that follows is not a reason to undo it
            log.info(
                "generating with %d CPU threads: one core left to the judge",
                torch.get_num_threads(),
            )
        self._window_start, self._num_finished = now, 0


class ModelSession:
    """Owns the model for one run; every method is called from the run loop's worker thread.

    `judged`: the engine's answers are graded alongside, so a CPU run may leave the judge a
    core (the logit measure has nothing to grade)."""

    def __init__(self, spec: GeneratorSpec, judged: bool = True) -> None:
        self.spec = spec
        with as_bad_input(spec):
            # Both engines place the model as the plan says: a model too large for one device
            # is spread by accelerate whichever measure reads it.
            placement = Placement(spec.device_map, spec.max_memory, spec.offload_folder)
            self.runner = Runner(spec.model, spec.dtype, spec.device, placement, spec.chat_template)
        self.core_sharing = CoreSharing(
            judged
            and self.runner.device.type == "cpu"
            and spec.shares_cpu_with_judge
            and "OMP_NUM_THREADS" not in os.environ
        )
        self.vectors: dict[tuple[str, int], torch.Tensor] = {}
        prompts = run_prompts(spec.sweep)
        self.prompts = dict(prompts)  # by name (protocol/prompt_battery.py)
        self.default_prompt = prompts[0][0]  # a trial without a prompt name (one prompt)
        self._rendered: dict[PromptKey, tuple[list[int], int | None]] = {}
        self.residual_norms: dict[int, float] | None = None  # residual units: load_vectors
        self.stamp_prefix = f"{spec.stamp}_"
        self.batch_size = 0  # set by the engine (`choose_batch_size`), halved out of memory
        self.num_done = 0  # answers handed over: after the first, a fault is not the model's

    # --- prompts ---------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """Where inputs go (the embedding's device when layers are spread)."""
        return str(self.runner.device)

    def render(self, messages: list[dict[str, str]], prefill: str = "") -> list[int]:
        return self.runner.render(messages, prefill=prefill)

    def prompt_key(self, spec: TrialSpec) -> PromptKey:
        """Which prompt a trial reads: its prompt's name, and its trial index when the prompt
        numbers its trials (the paper's "Trial N"), else None."""
        name = spec.prompt or self.default_prompt
        return name, (spec.trial if numbers_trials(self.prompts[name]) else None)

    def rendered(self, key: PromptKey) -> tuple[list[int], int | None]:
        """The prompt's token ids (its prefill included) and its first steered position."""
        if key not in self._rendered:
            name, trial = key
            version = self.prompts[name]
            messages = conversation(version, trial or 0)
            marker = trial_marker(self.spec.sweep.marker, version, trial or 0)
            with as_bad_input(self.spec):
                ids = self.render(messages, version.prefill)
                self._rendered[key] = ids, self.steer_from(messages, marker)
        return self._rendered[key]

    def steer_from(self, messages: list[dict[str, str]], marker: str = "") -> int | None:
        """The first prompt position the injection covers (BatcherConfig.prompt_steer_from);
        `marker`: the trial's own, when its prompt numbers trials (default: the plan's)."""
        sweep = self.spec.sweep
        if sweep.inject_style != "from_marker":
            return {"generation": None, "all": 0}[sweep.inject_style]
        marker = marker or sweep.marker
        marker_at = self.runner.marker_position(messages, marker)
        if marker_at is None:
            # The plan checked that the user prompt holds the marker: the chat template
            # changed that text, and steering from a guessed position would be silently wrong.
            raise BadInput(
                f"{self.spec.plan_file}: [sweep] marker: {marker!r} is not in the user "
                f"turn as {self.spec.model.name}'s chat template renders it (the template "
                "rewrites the user text, e.g. trims its whitespace); change prompt_user, or "
                'use inject_style = "all"'
            )
        # PROTOCOL.md: "from_marker" starts at the token just before the question marker.
        return max(marker_at - 1, 0)

    # --- concept vectors and trials --------------------------------------------------------

    def compute_vectors(self, pairs: set[tuple[str, int]]) -> VectorTable:
        """(concept, layer) → (float32 bytes, dim, norm), in one batched pass per chunk of words."""
        concepts = sorted({c for c, _ in pairs})
        layers = sorted({layer for _, layer in pairs})
        use_chat = self.spec.sweep.vector_prompt == "chat"
        with as_bad_input(self.spec, "computing concept vectors"):
            vectors = self.runner.concept_vectors(
                concepts, list(self.spec.baseline), layers, use_chat
            )
        return {
            key: (v.numpy().astype("<f4").tobytes(), int(v.numel()), float(v.norm()))
            for key, v in vectors.items()
            if key in pairs
        }

    def compute_residual_norms(self, layers: set[int]) -> dict[int, float]:
        """`strength_unit = "residual"`: each layer's mean residual norm over the baseline
        words' vector prompts (generate/runner.py), for the run database to keep."""
        use_chat = self.spec.sweep.vector_prompt == "chat"
        with as_bad_input(self.spec, "computing residual norms"):
            return self.runner.residual_norms(list(self.spec.baseline), sorted(layers), use_chat)

    def load_vectors(
        self,
        table: dict[tuple[str, int], tuple[bytes, float]],
        residual_norms: dict[int, float] | None = None,
    ) -> None:
        """The stored vectors, and under residual units the stored residual norms (None: raw
        units, the delta is strength × vector)."""
        self.vectors = {
            key: torch.frombuffer(bytearray(data), dtype=torch.float32)
            for key, (data, _) in table.items()
        }
        self.residual_norms = residual_norms

    def seed(self, trial: Trial) -> int:
        # Seeds leave the stamp out, so a trial draws the same tokens in every run of the plan.
        return trial_seed(self.spec.seed, trial.trial_id.removeprefix(self.stamp_prefix))

    def delta(self, trial: Trial, seed: int) -> torch.Tensor | None:
        """What the trial's arm adds at its layer `[d]`; None for a control trial."""
        return arm_delta(trial.spec, self.vectors, seed, self.residual_norms)

    # --- running ---------------------------------------------------------------------------

    def choose_batch_size(self, auto: Callable[[], int]) -> None:
        """The plan's batch size, or `auto()` (what fits the device) for `batch_size = "auto"`."""
        batch_size = self.spec.sweep.batch_size
        self.batch_size = batch_size if isinstance(batch_size, int) else auto()

    def hand_over(self, work: WorkSource, generations: list[Generation], now: float) -> None:
        """Finished trials to `work` (returns once they are recorded)."""
        self.core_sharing.on_finished(len(generations), now)
        work.done(generations)
        self.num_done += len(generations)

    def run(self, work: WorkSource, attempt: Callable[[int], bool]) -> bool:
        """`attempt(batch_size)` (True: `work` ran dry; False: it asked to stop first). Out of
        GPU memory, the trials in flight go back to `work` and the batch halves, down to one
        row; until a first answer is handed over, any other fault is this model's (BadInput)."""
        while True:
            try:
                with as_bad_input(
                    self.spec, "generating the first batch", unless=lambda: self.num_done > 0
                ):
                    return attempt(self.batch_size)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                num_requeued = work.requeue()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning(
                    "out of GPU memory: batch size now %d (%d trials requeued)",
                    self.batch_size,
                    num_requeued,
                )


@contextmanager
def as_bad_input(
    spec: GeneratorSpec, doing: str = "", unless: Callable[[], bool] | None = None
) -> Iterator[None]:
    """A model that does not load as a chat decoder, that introspectd cannot steer or
    reproduce (layers.decoder_layers, fallback.choose_path), or that fails computing vectors
    or its first batch is the plan's choice: one line naming it and the cause, exit 2, never a
    traceback. Out of memory is the machine's: it passes, as does anything once `unless()`."""
    try:
        yield
    except (torch.OutOfMemoryError, BadInput):
        raise
    except Exception as exc:
        if unless is not None and unless():
            raise
        where = f" ({doing})" if doing else ""
        raise BadInput(
            f"{spec.plan_file}: [model] name = {spec.model.name!r}{where}: {one_line(exc)}"
        ) from None


class TrialEngine(Protocol):
    """What the run loop drives, whichever the measure. Called from one worker thread. Its
    `session` (above: the model, its vectors, the batch size and the device) is
    what the loop reads; `run` is what differs between the measures."""

    session: ModelSession

    def run(self, work: WorkSource) -> bool:
        """Every trial `work` hands out, until it runs dry (True) or asks to stop (False)."""
        ...
