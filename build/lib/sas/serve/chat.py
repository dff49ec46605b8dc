"""Chat messages to a prompt: the tokenizer's chat template when it has one, else a plain-text template.

The plain template (for base models such as gemma-3-270m, which have none) is

    System: {system text}

    User: {user text}

    Assistant: {assistant text}

    User: {user text}

    Assistant:

one ``Role: text`` block per message, blank lines between, ending with ``Assistant:`` for the model to
continue. A base model would go on to write the next ``User:`` turn itself, so with this template the
server also stops at ``PLAIN_STOPS``.
"""

from __future__ import annotations

from ..forward.run import encode

PLAIN_STOPS = ["\n\nUser:", "\n\nSystem:", "\n\nAssistant:"]
_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


def has_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def plain_prompt(messages: list[dict]) -> str:
    """The plain-text template of ``messages`` (``[{"role", "content"}]``), ending with ``Assistant:``."""
    return "\n\n".join(f"{_ROLES[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"


def chat_ids(model, messages: list[dict]) -> tuple[list[int], list[str]]:
    """Token ids of the rendered conversation and the stop strings its template implies."""
    tok = model.tokenizer
    if has_template(tok):
        msgs = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in messages]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        # the template writes BOS itself when the model wants one
        bos = tok.bos_token is not None and text.startswith(tok.bos_token)
        return tok(text, add_special_tokens=False).input_ids if bos else encode(model, [text])[0], []
    return encode(model, [plain_prompt(messages)])[0], list(PLAIN_STOPS)
