"""`[model] chat_template`: how a conversation becomes text for a model, when not by its own
template. "plain" writes labelled turns for base models, which have none; any other string
is a Jinja template in transformers' dialect (`messages`, `add_generation_prompt`,
`bos_token`...). Both are set on the tokenizer (generate/runner.py), so prompts, the
from_marker position and `vector_prompt = "chat"` all read the same text.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from introspectd.protocol.plan_table import Table

PLAIN = "plain"
# A system prompt is written as it is, then a blank line; every other turn as "Role: text"
# (the role capitalised: "User", "Assistant") and a blank line; the generation prompt is
# "Assistant:" with no trailing space, which BPE vocabularies attach to the answer's first
# word. A base model may write the next "User:" turn too: max_new_tokens ends it.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% else %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def template_text(chat_template: str) -> str:
    """The Jinja text for the plan's value; "" = the model's own."""
    return PLAIN_TEMPLATE if chat_template == PLAIN else chat_template


def adds_special_tokens(chat_template: str) -> bool:
    """Whether prompts are tokenized with the tokenizer's own special tokens (its BOS): the
    plain template writes none, as a base model's training text had them from the tokenizer;
    a model's template (or yours) writes its own, and adding them again would double them."""
    return chat_template == PLAIN


def read_chat_template(t: Table) -> str:
    """The key, with a Jinja template that does not parse refused at load time."""
    value: str = t.read("chat_template")
    if value and value != PLAIN:
        # transformers' environment: loop controls on, blocks trimmed.
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        try:
            env.parse(value)
        except TemplateSyntaxError as exc:
            t.fail("chat_template", f'not "plain" and not a valid Jinja template: {exc.message}')
        if "messages" not in value:
            t.fail("chat_template", 'a template must write `messages` (or use "plain")')
    return value
