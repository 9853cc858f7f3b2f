"""A schema-agnostic parser for protobuf text format as Triton's config.pbtxt files use it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from repoman.config.tree import Field, ListValue, Message, Node, Pos, Scalar, issue_at
from repoman.errors import ConfigError

# NOTE: ASCII digits only: Python's \d, isdigit() and int() also take Unicode digits ("٣").
_NUMBER = re.compile(
    r"(0[xX][0-9a-fA-F]+|[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)([fF]?)",
    re.ASCII,
)
_DIGITS = frozenset("0123456789")
# Protobuf's text format refuses integers beyond 64 bits; so does this parser, which also
# keeps int() from ever seeing thousands of decimal digits.
MAX_INT = 2**64 - 1
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOLS = "{}[]<>:,;-"
_SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip
_FLOAT_WORDS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}
_CLOSER = {"{": "}", "<": ">"}
# Protobuf's own text parser stops at 100 levels; so does this one, well before Python's stack.
MAX_DEPTH = 100


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident" | "string" | "int" | "float" | "symbol" | "eof"
    text: str
    value: str | int | float
    pos: Pos

    def is_symbol(self, symbols: str) -> bool:
        return self.kind == "symbol" and self.text in symbols

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of file"
        if self.kind == "symbol":
            return f"'{self.text}'"
        if self.kind == "ident":
            return f"the identifier {self.text}"
        if self.kind == "string":
            return f"the string {self.value!r}"
        return f"the number {self.text}"


def parse(text: str, *, filename: str) -> Message:
    """Parse ``text`` into a tree of fields; raise ConfigError at the first syntax error."""
    return _Parser(text, filename).parse()


def _tokenize(text: str, file: str) -> Iterator[_Token]:
    i, line, line_start = 0, 1, 0
    while True:
        while i < len(text) and (text[i].isspace() or text[i] == "#"):
            if text[i] == "#":
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
                continue
            if text[i] == "\n":
                line, line_start = line + 1, i + 1
            i += 1
        pos = Pos(line, i - line_start + 1)
        if i >= len(text):
            yield _Token("eof", "", "", pos)
            return
        char = text[i]
        start = i
        if char in "\"'":
            value, i = _read_string(text, i, pos, file)
            yield _Token("string", text[start:i], value, pos)
        elif char in _DIGITS or (char == "." and text[i + 1 : i + 2] in _DIGITS):
            match = _NUMBER.match(text, i)
            assert match is not None  # NOTE: the first character is a digit or '.'
            i = match.end()
            if i < len(text) and (text[i].isalnum() or text[i] == "_"):
                _fail(
                    file,
                    pos,
                    f"expected a number, found the malformed number {match.group(0)}{text[i]}",
                )
            yield _number_token(match, pos, file)
        elif ident := _IDENT.match(text, i):
            i = ident.end()
            yield _Token("ident", ident.group(0), ident.group(0), pos)
        elif char in _SYMBOLS:
            i += 1
            yield _Token("symbol", char, char, pos)
        else:
            _fail(
                file, pos, f"expected a field name, value or bracket, found the character {char!r}"
            )


def _number_token(match: re.Match[str], pos: Pos, file: str) -> _Token:
    digits, suffix = match.group(1), match.group(2)
    if digits[:2] in ("0x", "0X"):
        return _int_token(digits, int(digits, 16), pos, file)
    if digits.isdigit() and not suffix:
        if len(digits) > 1 and digits[0] == "0":
            # NOTE: protobuf text format reads a leading zero as octal; say so instead of guessing.
            if not set(digits) <= set("01234567"):
                _fail(file, pos, f"expected an octal number after a leading 0, found {digits}")
            return _int_token(digits, int(digits, 8), pos, file)
        value = int(digits) if len(digits) <= len(str(MAX_INT)) else MAX_INT + 1
        return _int_token(digits, value, pos, file)
    return _Token("float", match.group(0), float(digits), pos)


def _int_token(text: str, value: int, pos: Pos, file: str) -> _Token:
    if value > MAX_INT:
        shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"
        _fail(file, pos, f"expected an integer that fits in 64 bits, found {shown}")
    return _Token("int", text, value, pos)


def _read_string(text: str, i: int, pos: Pos, file: str) -> tuple[str, int]:
    quote, i = text[i], i + 1
    out: list[str] = []
    while True:
        if i >= len(text) or text[i] == "\n":
            _fail(file, pos, f"expected a closing {quote} on the same line, found the line's end")
        char = text[i]
        if char == quote:
            return "".join(out), i + 1
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = text[i + 1 : i + 2]
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            i += 2
        elif escape in ("x", "u", "U") or escape.isdigit():
            pattern = {"x": r"[0-9a-fA-F]{1,2}", "u": r"[0-9a-fA-F]{4}", "U": r"[0-9a-fA-F]{8}"}
            start = i + 1 if escape.isdigit() else i + 2
            match = re.compile(pattern.get(escape, r"[0-7]{1,3}")).match(text, start)
            if not match:
                _fail(file, pos, f"expected hex or octal digits after \\{escape} in a string")
            out.append(chr(int(match.group(0), 8 if escape.isdigit() else 16)))
            i = match.end()
        else:
            _fail(file, pos, f'expected a known escape (\\n, \\t, \\\\, \\" ...), found \\{escape}')


def _fail(file: str, pos: Pos, message: str, field_path: str = "") -> NoReturn:
    raise ConfigError([issue_at(file, pos, field_path, message)])


class _Parser:
    def __init__(self, text: str, file: str) -> None:
        self._tokens = list(_tokenize(text, file))
        self._i = 0
        self._file = file
        self._depth = 0

    def parse(self) -> Message:
        return Message(self._fields(None, None, ""), Pos(1, 1))

    def _peek(self) -> _Token:
        return self._tokens[self._i]

    def _next(self) -> _Token:
        token = self._tokens[self._i]
        self._i = min(self._i + 1, len(self._tokens) - 1)
        return token

    def _fail(self, token: _Token, expected: str, owner: str) -> NoReturn:
        _fail(self._file, token.pos, f"expected {expected}, found {token.describe()}", owner)

    def _fields(self, opener: _Token | None, closer: str | None, owner: str) -> list[Field]:
        fields: list[Field] = []
        while True:
            token = self._peek()
            if closer and token.is_symbol(closer):
                self._next()
                return fields
            if token.kind == "eof":
                if opener is None:
                    return fields
                where = f"line {opener.pos.line}, column {opener.pos.column}"
                self._fail(token, f"'{closer}' to close `{owner}` opened at {where}", owner)
            if token.kind != "ident":
                expected = f"a field name or '{closer}'" if closer else "a field name"
                self._fail(token, expected, owner)
            fields.append(self._field())
            if self._peek().is_symbol(",;"):
                self._next()

    def _field(self) -> Field:
        name = self._next()
        token = self._peek()
        if token.is_symbol(":"):
            self._next()
            value = self._value(name.text, allow_list=True)
        elif token.is_symbol("{<["):
            value = self._value(name.text, allow_list=True)
        else:
            self._fail(token, f"':' or '{{' after the field name `{name.text}`", name.text)
        return Field(str(name.value), name.pos, value)

    def _value(self, owner: str, *, allow_list: bool) -> Node:
        token = self._peek()
        if token.is_symbol("{<[") and self._depth >= MAX_DEPTH:
            self._fail(token, f"at most {MAX_DEPTH} nested blocks", owner)
        self._depth += 1
        try:
            if token.is_symbol("{<"):
                self._next()
                return Message(self._fields(token, _CLOSER[token.text], owner), token.pos)
            if token.is_symbol("[") and allow_list:
                return self._list(owner)
            return self._scalar(owner)
        finally:
            self._depth -= 1

    def _list(self, owner: str) -> ListValue:
        opener = self._next()
        items: list[Node] = []
        if self._peek().is_symbol("]"):
            self._next()
            return ListValue(items, opener.pos)
        while True:
            items.append(self._value(owner, allow_list=False))
            token = self._next()
            if token.is_symbol("]"):
                return ListValue(items, opener.pos)
            if not token.is_symbol(","):
                self._fail(token, f"',' or ']' in the list of `{owner}`", owner)

    def _scalar(self, owner: str) -> Scalar:
        token = self._next()
        if token.kind == "string":
            parts = [str(token.value)]
            while self._peek().kind == "string":  # adjacent strings concatenate, as in C
                parts.append(str(self._next().value))
            return Scalar("".join(parts), "string", token.pos)
        if token.kind in ("int", "float"):
            return Scalar(token.value, token.kind, token.pos)
        if token.kind == "ident":
            word = token.text.lower()
            if word in _FLOAT_WORDS:
                return Scalar(_FLOAT_WORDS[word], "float", token.pos)
            return Scalar(token.text, "ident", token.pos)
        if token.is_symbol("-"):
            number = self._next()
            if number.kind in ("int", "float"):
                return Scalar(-number.value, number.kind, token.pos)  # type: ignore[operator]
            if number.kind == "ident" and number.text.lower() in _FLOAT_WORDS:
                return Scalar(-_FLOAT_WORDS[number.text.lower()], "float", token.pos)
            self._fail(number, "a number after '-'", owner)
        self._fail(token, f"a value for `{owner}`", owner)
