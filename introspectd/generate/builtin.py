"""Small random-weights models with a real byte-level BPE tokenizer and chat template.

They let the quickstart, the tests and the CPU benchmark run offline. A build is deterministic
(fixed corpus, fixed seed) and cached on first use; concurrent builders race safely
(cache_dir.write_once).
"""

from __future__ import annotations

import json
from pathlib import Path

from introspectd.generate.cache_dir import write_once
from introspectd.protocol.builtin_specs import (  # noqa: F401  (BUILTIN_SPECS re-exported)
    BUILTIN_SPECS,
    QWEN_SPLIT,
    BuiltinSpec,
)

_CORPUS = [
    "Tell me about celebration. Tell me about the ocean. Tell me about fear and silence.",
    "You are taking part in a scientific experiment on AI introspection.",
    "Do you notice any thought, feeling or impression that seems out of place?",
    "Yes, I notice something unusual. No, nothing unusual. I detect an injected thought.",
    "The quick brown fox jumps over the lazy dog while the river runs to the sea.",
    "Researchers sometimes insert artificial activation patterns into the network.",
    "table chair window bottle pencil blanket bicycle kettle ladder mirror river mountain",
    "forest desert island valley garden city village bridge library kitchen market station",
    "justice freedom history memory knowledge patience balance theory language number",
    "running cooking reading building walking writing swimming painting softness brightness",
    "It is about waves, water, joy, a party, quiet, dread, calm, music and light. 0123456789",
]


def build(spec: BuiltinSpec, dest: Path) -> Path:
    """Build the model into `dest` unless it is already there; returns `dest`."""

    def write(work: Path) -> None:
        _write_tokenizer(spec, work)
        _write_model(spec, work)

    return write_once(dest, write)


def _write_tokenizer(spec: BuiltinSpec, out: Path) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(spec.specials),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.add_special_tokens(list(spec.specials))
    eos = spec.eos_tokens[0]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=spec.specials[0])
    fast.chat_template = spec.chat_template
    fast.save_pretrained(out)


def _write_model(spec: BuiltinSpec, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(out)
    config_dict = spec.config_dict()
    config_dict["vocab_size"] = len(tokenizer)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in spec.eos_tokens]
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0
    )
    model.save_pretrained(out)
    (out / "introspectd-builtin.json").write_text(json.dumps({"spec": spec.__dict__}))
