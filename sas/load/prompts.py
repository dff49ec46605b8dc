"""Turn A/B questions into token ids, for base models and for chat models.

A prompt is ``prefix + suffix``: the prefix holds the question (BOS first; for a chat model, the
chat template up to the assistant's turn), the suffix is the answer scaffold that ends just
before the answer letter: ``"\\n\\nAnswer: ("`` for a base model, ``"("`` for a chat model. The
answer-letter token comes right after it, so its position is known for every row by
construction, under any padding.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import ABPair

BASE_SUFFIX = "\n\nAnswer: ("
CHAT_SUFFIX = "("


@dataclass
class ABTokens:
    prefix: list[list[int]]  # question tokens, one list per pair
    suffix: list[int]  # the answer scaffold, the same for every pair
    letters: dict[str, int]  # letter -> token id


def is_chat(model) -> bool:
    return getattr(model.tokenizer, "chat_template", None) is not None


def letter_ids(tokenizer, letters=("A", "B")) -> dict[str, int]:
    out = {}
    for letter in letters:
        ids = tokenizer(letter, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"the answer letter {letter!r} is {len(ids)} tokens for this tokenizer; A/B scoring "
                             "needs single-token letters")
        out[letter] = ids[0]
    return out


def bos_ids(model) -> list[int]:
    """``[BOS]`` for a model that reads text after a BOS token, ``[]`` for one that does not: the one BOS rule."""
    tok = model.tokenizer
    # models whose tokenizer adds no BOS (SmolLM2) set default_prepend_bos=False
    return [tok.bos_token_id] if model.cfg.default_prepend_bos and tok.bos_token_id is not None else []


def question_ids(model, question: str, chat: bool | None = None) -> list[int]:
    tok = model.tokenizer
    if chat if chat is not None else is_chat(model):
        return list(tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False))
    return bos_ids(model) + tok(question, add_special_tokens=False).input_ids


def ab_tokens(model, pairs: list[ABPair], chat: bool | None = None) -> ABTokens:
    """Token ids of each pair's prompt, split into the question prefix and the answer scaffold."""
    if not pairs:
        raise ValueError("the data set is empty")
    chat = is_chat(model) if chat is None else chat
    suffix = model.tokenizer(CHAT_SUFFIX if chat else BASE_SUFFIX, add_special_tokens=False).input_ids
    letters = sorted({p.matching for p in pairs} | {p.not_matching for p in pairs})
    return ABTokens([question_ids(model, p.question, chat) for p in pairs], suffix,
                    letter_ids(model.tokenizer, letters))


def open_ended_prompts(model, behavior: str, n: int | None = None) -> list[str]:
    """The open-ended test questions of a behaviour, as prompts: ``Question: ...\n\nAnswer:`` for a base
    model, the bare question for a chat model."""
    from .data import load_open_ended

    questions = load_open_ended(behavior)[:n]
    return questions if is_chat(model) else [f"Question: {q}\n\nAnswer:" for q in questions]

