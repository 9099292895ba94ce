"""The forced-choice measure (`[sweep] measure = "logit"`): one steered forward pass per trial,
read as P(yes) at the first answer position. No sampling, no text, nothing to judge.

Rows of a batch may ask different questions (the detection question, factual controls) and
carry different arms, concepts, layers and strengths: prompts are left-padded to one width and
each row is steered from its own first steered position (per-row `SteeringState`).
"""

from __future__ import annotations

import time

import torch

from introspectd.errors import BadInput
from introspectd.generate.interface import GeneratorSpec, WorkSource
from introspectd.generate.runner import Runner, batch_size_for
from introspectd.generate.session import ModelSession, as_bad_input
from introspectd.generate.steering import SteeringState, steering
from introspectd.protocol.factual import FACTUAL_QUESTIONS, factual_user_text
from introspectd.protocol.prompts import PROMPT_VERSIONS, introspection_messages
from introspectd.protocol.results import Generation, Readout, now_iso
from introspectd.protocol.trials import Arm, Trial

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


def _input_key(trial: Trial) -> tuple[object, ...] | None:
    """What decides a trial's read-out, when that is not its own seed (None: the random arm)."""
    spec = trial.spec
    if spec.arm is Arm.RANDOM:
        return None
    if spec.arm is Arm.CONTROL:
        return (spec.question, spec.arm)
    return (spec.question, spec.arm, spec.concept, spec.layer, spec.strength)


class LogitEngine:
    """The logit measure for one run (`session.TrialEngine`): one steered forward pass a
    trial, on the run's `ModelSession` (the same placement, vectors and back-off as
    generation); no decode engine to build or check, the plain forward pass is the model's own.
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.session = ModelSession(spec, judged=False)  # nothing is judged alongside
        with as_bad_input(spec):
            prompts = [self._messages(None)] + [
                self._messages(q) for q in range(len(FACTUAL_QUESTIONS))
            ]
            self.question_ids = [self.session.render(m) for m in prompts]
            self.steer_from = [self.session.steer_from(m) or 0 for m in prompts]
        tokenizer = self.runner.tokenizer
        self.yes_ids = single_token_ids(tokenizer, YES_SPELLINGS)
        self.no_ids = single_token_ids(tokenizer, NO_SPELLINGS)
        if not self.yes_ids or not self.no_ids:
            raise BadInput(
                f'{spec.plan_file}: [sweep] measure = "logit": {spec.model.name}\'s tokenizer '
                "has no single-token spelling of yes or no to read"
            )
        pad_id = tokenizer.pad_token_id
        eos = self.runner.eos_ids()
        self.pad_id = int(pad_id if pad_id is not None else (eos[0] if eos else 0))
        longest = max(len(ids) for ids in self.question_ids)
        self.session.choose_batch_size(lambda: batch_size_for(self.runner.model, longest))
        self.known: dict[tuple[object, ...], Readout] = {}  # read_out_reusing

    @property
    def runner(self) -> Runner:
        return self.session.runner

    def _messages(self, question: int | None) -> list[dict[str, str]]:
        sweep = self.spec.sweep
        if question is None:
            return introspection_messages(
                sweep.prompt_version, sweep.prompt_system, sweep.prompt_user
            )
        system = sweep.prompt_system if sweep.prompt_user else ""
        if not sweep.prompt_user:
            system = PROMPT_VERSIONS[sweep.prompt_version].system
        user = factual_user_text(FACTUAL_QUESTIONS[question], sweep.marker)
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
                Generation(t.trial_id, "", 0, at, r) for t, r in zip(trials, readouts, strict=True)
            ]
            self.session.hand_over(work, generations, time.monotonic())

    def read_out_reusing(self, trials: list[Trial], layers: list[int]) -> list[Readout]:
        """`read_out`, computing each distinct input once. With no sampling, trials that add
        the same thing to the same prompt read the same value: every injection trial of a
        (concept, layer, strength, question), every control trial of a question. Only the
        random arm differs from trial to trial."""
        keys = [_input_key(t) for t in trials]
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
    def read_out(self, trials: list[Trial], layers: list[int]) -> list[Readout]:
        """One steered forward pass over `trials`; their read-outs in the same order."""
        if not trials:
            return []
        runner = self.runner
        prompts = [0 if t.spec.question is None else t.spec.question + 1 for t in trials]
        ids, mask, positions, steered = left_pad(
            [self.question_ids[p] for p in prompts],
            [self.steer_from[p] for p in prompts],
            self.pad_id,
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
        return yes_no_probs(logits, self.yes_ids, self.no_ids)
