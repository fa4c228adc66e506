"""``sasl.jaas.config`` in Kafka's JAAS syntax, parsed as Kafka's ``JaasConfig`` does.

    org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";

Each entry is a login module class name, a control flag (``required``, ``requisite``, ``sufficient``,
``optional``), ``key=value`` options and a closing ``;``. Values are words or quoted strings (``"`` or
``'``) with Java's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\t``, octal); ``//`` and ``/* */`` comments are
skipped. Kafka tokenizes with ``java.io.StreamTokenizer``, whose words also take ``-``, ``_``, ``$`` and,
through its number parsing, digits and ``.``; we accept the same words.

Errors say where the text is wrong but never quote it: a JAAS config holds passwords.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLAGS = ("required", "requisite", "sufficient", "optional")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "a": "\a", "v": "\v"}


class JaasConfigError(ValueError):
    pass


@dataclass(frozen=True)
class JaasModule:
    name: str
    flag: str
    options: dict[str, str] = field(default_factory=dict, repr=False)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c in "-_$." or ord(c) >= 160


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, value, position): kind is ``word``, ``quoted`` or the punctuation character itself."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise JaasConfigError(f"unterminated comment at character {i}")
            i = end + 2
        elif c in "\"'":
            start, i, value = i, i + 1, []
            while True:
                if i >= n or text[i] == "\n":
                    raise JaasConfigError(f"unterminated quoted value starting at character {start}")
                ch = text[i]
                if ch == c:
                    i += 1
                    break
                if ch == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    if nxt in "01234567":
                        j = i + 1
                        while j < n and j < i + 4 and text[j] in "01234567":
                            j += 1
                        value.append(chr(int(text[i + 1 : j], 8) & 0xFF))
                        i = j
                        continue
                    value.append(_ESCAPES.get(nxt, nxt))
                    i += 2
                    continue
                value.append(ch)
                i += 1
            out.append(("quoted", "".join(value), start))
        elif _is_word_char(c):
            start = i
            while i < n and _is_word_char(text[i]):
                i += 1
            out.append(("word", text[start:i], start))
        else:
            out.append((c, c, i))
            i += 1
    return out


def parse_jaas(text: str) -> list[JaasModule]:
    """Every login module entry in ``text``; JaasConfigError names the first problem."""
    tokens = _tokens(text)
    modules = []
    i = 0

    def expect(kinds: tuple[str, ...], what: str) -> tuple[str, str, int]:
        nonlocal i
        if i >= len(tokens):
            raise JaasConfigError(f"expected {what} at the end")
        token = tokens[i]
        if token[0] not in kinds:
            raise JaasConfigError(f"expected {what} at character {token[2]}")
        i += 1
        return token

    while i < len(tokens):
        name = expect(("word",), "a login module class name")[1]
        flag = expect(("word",), "a control flag (required, requisite, sufficient, optional)")
        if flag[1].lower() not in FLAGS:
            raise JaasConfigError(f"invalid control flag at character {flag[2]} (use required, requisite, sufficient or optional)")
        options: dict[str, str] = {}
        while True:
            if i >= len(tokens):
                raise JaasConfigError("the login module entry does not end with ';'")
            if tokens[i][0] == ";":
                i += 1
                break
            key = expect(("word",), "an option name or ';'")[1]
            expect(("=",), f"'=' after option {key}")
            value = expect(("word", "quoted"), f"a value for option {key}")[1]
            options[key] = value
        modules.append(JaasModule(name, flag[1].lower(), options))
    if not modules:
        raise JaasConfigError("no login module")
    return modules
