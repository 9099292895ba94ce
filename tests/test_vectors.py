"""Concept vectors match a hand computation from `hidden_states[L+1]` at the last token."""

from __future__ import annotations

import torch

from introspectd.protocol.prompts import baseline_words, vector_text


def _hand_activation(runner, word: str, layer: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ids = runner.tokenizer(vector_text(word), return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hidden = runner.model(input_ids=ids, output_hidden_states=True).hidden_states
    return hidden[layer + 1][0, -1].float()


def test_concept_vector_equals_hand_computation(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    concepts = ["ocean", "fear"]
    baseline = baseline_words(concepts)
    assert len(baseline) >= 45 and not set(concepts) & set(baseline)
    vectors = tiny_runner.concept_vectors(concepts, baseline, [1, 4], use_chat=False)
    for layer in (1, 4):
        mean = torch.stack([_hand_activation(tiny_runner, w, layer) for w in baseline]).mean(0)
        for concept in concepts:
            expected = _hand_activation(tiny_runner, concept, layer) - mean
            torch.testing.assert_close(vectors[(concept, layer)], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(vectors[("ocean", 1)], vectors[("fear", 1)])


def test_baseline_excludes_sweep_concepts() -> None:
    assert "river" not in baseline_words(["river", "fear"])
    assert "river" in baseline_words(["fear"])
