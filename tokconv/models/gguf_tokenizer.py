"""Rebuild a Hugging Face fast tokenizer from the metadata of a GGUF file.

A GGUF carries no ``tokenizer.json``: it stores the vocabulary, merges, token
types and special token ids under llama.cpp's key names. transformers ships a
converter from those keys to a ``tokenizers.Tokenizer`` that needs no PyTorch
(``transformers.integrations.gguf.gguf_tokenizer_mapping``, an internal module:
the tests pin its behaviour on the bundled models). This module feeds it and
adds what it leaves out: the BOS/EOS post-processor and the tokenizer config.
"""

from __future__ import annotations

from typing import Any

import gguf
from tokenizers import Tokenizer, processors
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    GGUF_TOKENIZER_MAPPING,
    convert_gguf_tokenizer,
)

from ..errors import UnsupportedArchitecture

# Tokens that end a chat turn; generation should stop on them as on EOS.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")

# Gemma 3 GGUF files often ship without `tokenizer.chat_template`; this is the
# template of Google's Gemma 3 tokenizer_config.json, text parts only.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    """The value of one metadata key, or ``default`` when the file lacks it."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _tokenizer_dict(reader: gguf.GGUFReader) -> dict[str, Any]:
    """GGUF ``tokenizer.*`` fields renamed as transformers' converter expects."""
    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    values = {name: _field(reader, f"tokenizer.{key}") for key, name in renames.items()}
    return {name: value for name, value in values.items() if value is not None}


def _token(tokens: list[str], token_id: int | None) -> str | None:
    """The token string for an id, or None for a missing or out-of-range id."""
    if token_id is None or not 0 <= token_id < len(tokens):
        return None
    return tokens[token_id]


def _post_processor(bos: tuple[str, int] | None, eos: tuple[str, int] | None) -> processors.TemplateProcessing:
    """A post-processor that adds ``bos`` before and ``eos`` after each sequence (None: add nothing)."""

    def template(seq: str, type_id: int) -> list[str]:
        head = [f"{bos[0]}:{type_id}"] if bos else []
        tail = [f"{eos[0]}:{type_id}"] if eos else []
        return [*head, f"${seq}:{type_id}", *tail]

    specials = [t for t in (bos, eos) if t]
    return processors.TemplateProcessing(
        single=template("A", 0), pair=template("A", 0) + template("B", 1), special_tokens=specials
    )


def tokenizer_from_gguf(reader: gguf.GGUFReader) -> tuple[Tokenizer, dict[str, Any]]:
    """The fast tokenizer a GGUF file describes, and its ``tokenizer_config.json`` fields.

    Control tokens (``<|im_start|>``, ``<bos>``, ``<start_of_turn>``...) become
    special tokens that encode to one id. BOS is added on encode exactly when
    the file's ``tokenizer.ggml.add_bos_token`` says so (Gemma 3: yes).

    Raises:
        UnsupportedArchitecture: the file describes a tokenizer type transformers cannot build.
    """
    arch = str(_field(reader, "general.architecture", ""))
    tdict = _tokenizer_dict(reader)
    if "tokens" not in tdict:
        raise UnsupportedArchitecture(
            "the GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens)",
            "use a GGUF file exported with its tokenizer, as llama.cpp's converter does by default",
        )
    try:
        tokenizer, _ = convert_gguf_tokenizer(arch, tdict)
    except ValueError as err:
        raise UnsupportedArchitecture(
            f"cannot build the tokenizer of this GGUF file: {err}",
            "use a model with a gpt2 (byte-level BPE) or llama/gemma (sentencepiece) tokenizer",
        ) from err

    tokens: list[str] = tdict["tokens"]
    ids = {k: _field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    bos, eos = _token(tokens, ids["bos"]), _token(tokens, ids["eos"])
    # llama.cpp adds BOS to sentencepiece ("llama") vocabularies unless told otherwise.
    add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", tdict.get("tokenizer_type") == "llama"))
    add_eos = bool(_field(reader, "tokenizer.ggml.add_eos_token", False))
    # transformers 5 ignores add_bos_token in tokenizer_config.json once tokenizer.json exists
    # (and reports False): this post-processor is what makes AutoTokenizer add BOS.
    tokenizer.post_processor = _post_processor(
        (bos, ids["bos"]) if add_bos and bos else None, (eos, ids["eos"]) if add_eos and eos else None
    )

    chat_template = _field(reader, "tokenizer.chat_template")
    if chat_template is None and arch == "gemma3" and "<start_of_turn>" in tokenizer.get_vocab():
        chat_template = GEMMA3_CHAT_TEMPLATE
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": _token(tokens, ids["unknown"]),
        "pad_token": _token(tokens, ids["padding"]),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_field(reader, f"{arch}.context_length", 2048)),
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
        # Name the control tokens the chat template uses, as Hugging Face repos do, so they
        # show up in `all_special_ids`; the other control tokens are special in tokenizer.json only.
        named = {config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        added = sorted(tokenizer.get_added_tokens_decoder().items())
        extra = [t.content for _, t in added if t.special and t.content in chat_template and t.content not in named]
        if extra:
            config["additional_special_tokens"] = extra
    return tokenizer, config


def end_of_turn_ids(tokenizer: Tokenizer, eos_id: int | None) -> list[int]:
    """EOS followed by the chat end-of-turn tokens this vocabulary has, for generation_config.json."""
    found = [tokenizer.token_to_id(t) for t in END_OF_TURN_TOKENS]
    ids = ([eos_id] if eos_id is not None else []) + [i for i in found if i is not None]
    return list(dict.fromkeys(ids))
