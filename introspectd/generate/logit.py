"""The read-out measures: one steered forward pass per trial, read at the first answer
position as P(yes) (`[sweep] measure = "logit"`) or as P(letter) of a multiple-choice
question's options (`measure = "choice"`, generate/choice.py). No sampling, no text, nothing to
judge.

Rows of a batch may ask different questions (the detection question, factual controls, the
mismatch design's "are you thinking about X?", multiple-choice questions with their own
options) and carry different arms, concepts, layers and strengths: prompts are left-padded to
one width and each row is steered from its own first steered position (per-row
`SteeringState`).
"""

from __future__ import annotations

import time

import torch

from introspectd.errors import BadInput
from introspectd.generate.choice import letter_spellings, option_probs
from introspectd.generate.interface import GeneratorSpec, WorkSource
from introspectd.generate.runner import Runner, batch_size_for
from introspectd.generate.session import ModelSession, as_bad_input
from introspectd.generate.steering import SteeringState, steering
from introspectd.protocol.factual import FACTUAL_QUESTIONS, factual_user_text
from introspectd.protocol.prompts import PROMPT_VERSIONS, introspection_messages
from introspectd.protocol.results import ChoiceReadout, Generation, Readout, now_iso
from introspectd.protocol.specificity import (
    LETTERS,
    NOTHING,
    about_user_text,
    choice_options,
    choice_user_text,
    distractor_pool,
)
from introspectd.protocol.trials import Arm, Trial, TrialSpec

# Which question a trial asks: ("detect", None), ("factual", i), ("about", concept) or
# ("choice", options). Every trial with the same key reads the same prompt.
PromptKey = tuple[str, int | str | tuple[str, ...] | None]
DETECT: PromptKey = ("detect", None)

YES_SPELLINGS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_SPELLINGS = ("No", " No", "no", " no", "NO", " NO")


def single_token_ids(tokenizer: object, spellings: tuple[str, ...]) -> list[int]:
    """The ids of those spellings the tokenizer holds as one token (no special tokens added)."""
    ids: set[int] = set()
    for text in spellings:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)


def left_pad(
    rows: list[list[int]], steer_from: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids, steered-position mask), each `[B, S]`: every
    row ends at the last column, its positions count from its first real token, and it is
    steered from its own `steer_from` (a position in the unpadded prompt) on."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    steered = torch.zeros((len(rows), width))
    for i, (row, start) in enumerate(zip(rows, steer_from, strict=True)):
        pad = width - len(row)
        ids[i, pad:] = torch.tensor(row)
        mask[i, pad:] = 1
        steered[i, pad + start :] = 1.0
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions, steered


def yes_no_probs(logits: torch.Tensor, yes_ids: list[int], no_ids: list[int]) -> list[Readout]:
    """Per row of `logits` `[B, V]`: P(yes), P(no) summed over their spellings, and p_yes."""
    probs = logits.float().softmax(dim=-1)
    prob_yes = probs[:, yes_ids].sum(dim=-1)
    prob_no = probs[:, no_ids].sum(dim=-1)
    p_yes = prob_yes / (prob_yes + prob_no).clamp(min=torch.finfo(torch.float32).tiny)
    return [
        Readout(float(p), float(y), float(n))
        for p, y, n in zip(p_yes.tolist(), prob_yes.tolist(), prob_no.tolist(), strict=True)
    ]


def _input_key(trial: Trial, prompt: PromptKey) -> tuple[object, ...] | None:
    """What decides a trial's read-out, when that is not its own seed (None: the random arm)."""
    spec = trial.spec
    if spec.arm is Arm.RANDOM:
        return None
    if spec.arm is Arm.CONTROL:
        return (prompt, spec.arm)
    return (prompt, spec.arm, spec.concept, spec.layer, spec.strength)


def _options(key: PromptKey) -> tuple[str, ...]:
    kind, options = key
    assert kind == "choice" and isinstance(options, tuple), key
    return options


class LogitEngine:
    """The read-out measures for one run (`session.TrialEngine`): one steered forward pass a
    trial, on the run's `ModelSession` (the same placement, vectors and back-off as
    generation); no decode engine to build or check, the plain forward pass is the model's own.
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.is_choice = spec.sweep.measure == "choice"
        self.session = ModelSession(spec, judged=False)  # nothing is judged alongside
        self.prompts: dict[PromptKey, tuple[list[int], int]] = {}  # ids, steered from
        tokenizer = self.runner.tokenizer
        if self.is_choice:
            self.letter_ids = [single_token_ids(tokenizer, letter_spellings(c)) for c in LETTERS]
            self._check_read(all(self.letter_ids[: self._num_options()]), "the option letters")
        else:
            self.yes_ids = single_token_ids(tokenizer, YES_SPELLINGS)
            self.no_ids = single_token_ids(tokenizer, NO_SPELLINGS)
            self._check_read(bool(self.yes_ids and self.no_ids), "yes or no")
        pad_id = tokenizer.pad_token_id
        eos = self.runner.eos_ids()
        self.pad_id = int(pad_id if pad_id is not None else (eos[0] if eos else 0))
        longest = max(len(self.prompt_for(key)[0]) for key in self._longest_prompts())
        self.session.choose_batch_size(lambda: batch_size_for(self.runner.model, longest))
        self.known: dict[tuple[object, ...], Readout | ChoiceReadout] = {}  # read_out_reusing

    @property
    def runner(self) -> Runner:
        return self.session.runner

    def _check_read(self, is_readable: bool, what: str) -> None:
        if not is_readable:
            raise BadInput(
                f"{self.spec.plan_file}: [sweep] measure = {self.spec.sweep.measure!r}: "
                f"{self.spec.model.name}'s tokenizer has no single-token spelling of {what} "
                "to read"
            )

    def _num_options(self) -> int:
        return self.spec.sweep.choice_distractors + 2  # the concept and "nothing unusual"

    def _longest_prompts(self) -> list[PromptKey]:
        """Prompts at least as long as any the run asks (they size an automatic batch)."""
        sweep = self.spec.sweep
        keys: list[PromptKey] = [DETECT]
        keys += [("factual", q) for q in range(len(FACTUAL_QUESTIONS))]
        keys += [("about", c) for c in sweep.concepts] if sweep.mismatch else []
        if self.is_choice:
            words = {NOTHING, *sweep.concepts}
            words.update(w for c in sweep.concepts for w in distractor_pool(c, sweep))
            keys = [("choice", tuple(sorted(words, key=len)[-self._num_options() :]))]
        return keys

    def prompt_key(self, spec: TrialSpec) -> PromptKey:
        if self.is_choice:
            return (
                "choice",
                choice_options(self.spec.seed, spec.concept, spec.trial, self.spec.sweep),
            )
        if spec.about is not None:
            return ("about", spec.about)
        if spec.question is not None:
            return ("factual", spec.question)
        return DETECT

    def prompt_for(self, key: PromptKey) -> tuple[list[int], int]:
        """The prompt's token ids and its first steered position, rendered once."""
        if key not in self.prompts:
            with as_bad_input(self.spec):
                messages = self._messages(key)
                self.prompts[key] = (
                    self.session.render(messages),
                    self.session.steer_from(messages) or 0,
                )
        return self.prompts[key]

    def _messages(self, key: PromptKey) -> list[dict[str, str]]:
        sweep = self.spec.sweep
        if key == DETECT:
            return introspection_messages(
                sweep.prompt_version, sweep.prompt_system, sweep.prompt_user
            )
        # Every other question keeps the version's (or the plan's) system turn.
        system = sweep.prompt_system if sweep.prompt_user else ""
        if not sweep.prompt_user:
            system = PROMPT_VERSIONS[sweep.prompt_version].system
        value = key[1]
        if isinstance(value, int):
            user = factual_user_text(FACTUAL_QUESTIONS[value], sweep.marker)
        elif isinstance(value, str):
            user = about_user_text(value, sweep.marker)
        else:
            template = sweep.prompt_user or PROMPT_VERSIONS["choice"].user
            user = choice_user_text(template, _options(key))
        return introspection_messages(sweep.prompt_version, system, user)

    def run(self, work: WorkSource) -> bool:
        """Read out trials until `work` runs dry; False if it asked to stop first (the session
        backs off out of memory)."""
        return self.session.run(work, lambda n: self._read_out_all(work, n))

    def _read_out_all(self, work: WorkSource, batch_size: int) -> bool:
        layers = list(self.spec.layers)
        while True:
            if work.should_stop():
                return False
            trials = work.take(batch_size)
            if not trials:
                return True
            readouts = self.read_out_reusing(trials, layers)
            at = now_iso()
            generations = [
                Generation(t.trial_id, "", 0, at, choice=r)
                if isinstance(r, ChoiceReadout)
                else Generation(t.trial_id, "", 0, at, readout=r)
                for t, r in zip(trials, readouts, strict=True)
            ]
            self.session.hand_over(work, generations, time.monotonic())

    def read_out_reusing(
        self, trials: list[Trial], layers: list[int]
    ) -> list[Readout | ChoiceReadout]:
        """`read_out`, computing each distinct input once. With no sampling, trials that add
        the same thing to the same prompt read the same value: every injection trial of a
        (concept, layer, strength, question), every control trial of a question. Only the
        random arm differs from trial to trial."""
        keys = [_input_key(t, self.prompt_key(t.spec)) for t in trials]
        todo: dict[object, Trial] = {}
        for key, trial in zip(keys, trials, strict=True):
            if key is None:
                todo[trial.trial_id] = trial
            elif key not in self.known and key not in todo:
                todo[key] = trial
        computed = dict(zip(todo, self.read_out(list(todo.values()), layers), strict=True))
        self.known.update((k, r) for k, r in computed.items() if isinstance(k, tuple))
        return [
            computed[t.trial_id] if key is None else self.known[key]
            for key, t in zip(keys, trials, strict=True)
        ]

    @torch.inference_mode()
    def read_out(self, trials: list[Trial], layers: list[int]) -> list[Readout | ChoiceReadout]:
        """One steered forward pass over `trials`; their read-outs in the same order."""
        if not trials:
            return []
        runner = self.runner
        keys = [self.prompt_key(t.spec) for t in trials]
        prompts = [self.prompt_for(key) for key in keys]
        ids, mask, positions, steered = left_pad(
            [ids for ids, _ in prompts], [start for _, start in prompts], self.pad_id
        )
        dtype = next(runner.model.parameters()).dtype
        hidden = int(runner.model.config.get_text_config().hidden_size)
        deltas: dict[int, torch.Tensor] = {}
        for i, trial in enumerate(trials):
            delta = self.session.delta(trial, self.session.seed(trial))
            if delta is None:
                continue
            layer = trial.spec.layer
            if layer not in deltas:
                deltas[layer] = torch.zeros(len(trials), hidden)
            deltas[layer][i] = delta
        device = runner.device
        state = SteeringState(
            deltas={layer: d.to(device, dtype) for layer, d in deltas.items()},
            position_mask=steered.to(device, dtype),
        )
        with steering(runner.model, state, layers):
            logits = runner.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=1,
            ).logits[:, -1, :]
        if self.is_choice:
            return list(option_probs(logits, self.letter_ids, [_options(k) for k in keys]))
        return list(yes_no_probs(logits, self.yes_ids, self.no_ids))
