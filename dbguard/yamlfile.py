# dbguard/yamlfile.py — owns reading dbguard's YAML files (dbguard.yaml and the rule files) with
# line numbers: the ConfigError every such file reports (FILE:LINE: KEY: MESSAGE), reading the
# bytes safely, composing the YAML node tree, and YamlReader, which walks nodes by schema (unknown
# keys with a did-you-mean, duplicate keys, `<<` merge keys, typed scalars, optional ${ENV}
# expansion). It knows no schema itself: config.py and policy/rules.py describe their own files.
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from secrets import token_hex
from typing import Final, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_ECHO",
    "TAG_BOOL",
    "TAG_FLOAT",
    "TAG_INT",
    "TAG_MERGE",
    "TAG_NULL",
    "TAG_STR",
    "ConfigError",
    "EnvRefs",
    "YamlEntry",
    "YamlReader",
    "choices",
    "compose_yaml",
    "echo",
    "enum_values",
    "expand_env",
    "is_null",
    "join_key",
    "kind_of",
    "line_of",
    "read_yaml_text",
    "suggest",
    "value_of",
]

# YAML merge keys (<<: *anchor) may nest; a recursive anchor must not loop forever.
_MAX_MERGE_DEPTH: Final = 32
# Values echoed in error messages are cut to this many characters.
MAX_ECHO: Final = 80

_VAR_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT_RE: Final = re.compile(r"[0-9][0-9_]*\Z")

TAG_STR: Final = "tag:yaml.org,2002:str"
TAG_NULL: Final = "tag:yaml.org,2002:null"
TAG_BOOL: Final = "tag:yaml.org,2002:bool"
TAG_INT: Final = "tag:yaml.org,2002:int"
TAG_FLOAT: Final = "tag:yaml.org,2002:float"
TAG_MERGE: Final = "tag:yaml.org,2002:merge"

_E = TypeVar("_E", bound=StrEnum)


class ConfigError(Exception):
    """A configuration problem, rendered as ``FILE:LINE: KEY: MESSAGE``.

    ``line`` is 1-based, or None when the problem is not at a line (missing file, empty file).
    ``key`` is the key path (``listeners[0].listen``) or None for the file as a whole.
    """

    def __init__(self, path: Path | str, line: int | None, key: str | None, message: str) -> None:
        super().__init__(path, line, key, message)
        self.path = Path(path)
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


# ---------------------------------------------------------------------------------------------
# Files and YAML text


def read_yaml_text(path: Path, max_bytes: int, *, what: str, not_found: str) -> str:
    """The UTF-8 text of a YAML file, or a ConfigError naming it (never OSError)."""
    try:
        if path.is_dir():
            raise ConfigError(path, None, None, "is a directory, expected a YAML file")
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(path, None, None, not_found) from None
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read {what}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigError(path, None, None, f"larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(path, line, None, "not valid UTF-8") from None


def compose_yaml(text: str, path: Path, refs: EnvRefs | None = None) -> Node | None:
    """The YAML node tree of ``text`` (None for an empty document); syntax errors name the line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        what = "; ".join(x for x in (e.context, e.problem) if x)
        if refs is not None:
            what = refs.restore(what)
        raise ConfigError(path, line, None, f"invalid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, None, f"invalid YAML: {type(e).__name__}") from None


def expand_env(text: str, env: Mapping[str, str], *, unset: str | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``$${`` is a literal ``${``.

    The default applies when VAR is unset or empty. An unset VAR without a default is a
    ValueError naming the variable (never its value), or ``unset`` when that is given (offline
    commands that read a configuration but never use its secrets).
    """
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        if text.startswith("$${", j):
            out.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                raise ValueError("unterminated '${' (write '$${' for a literal '${')")
            name, sep, default = text[j + 2 : end].partition(":-")
            if not _VAR_NAME_RE.match(name):
                raise ValueError(
                    f"invalid variable reference {echo('${' + name + '}')}: expected ${{NAME}} or ${{NAME:-default}}"
                )
            value = env.get(name)
            if value is None or (sep and not value):
                if not sep and unset is None:
                    raise ValueError(f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
                value = default if sep else (unset or "")
            out.append(value)
            i = end + 1
        else:
            out.append("$")
            i = j + 1


class EnvRefs:
    """Hides ``${...}`` references from the YAML parser and puts them back in scalars.

    ``token: ${DBGUARD_ADMIN_TOKEN}`` inside a flow mapping (``{listen: …, token: ${X}}``, as in
    the product's own example) is not valid YAML: ``{`` and ``}`` end a plain scalar there. Each
    reference is swapped for a placeholder of plain-scalar-safe characters on the same line, so
    line numbers are unchanged, and restored verbatim in every scalar before expansion.
    """

    _REF_RE: Final = re.compile(r"\$?\$\{[^}\n]*\}")

    def __init__(self, prefix: str, originals: list[str]) -> None:
        self._originals = originals
        self._token_re = re.compile(re.escape(prefix) + r"([0-9]+)__")

    @classmethod
    def protect(cls, text: str) -> tuple[str, EnvRefs]:
        prefix = "__dbguard_env_" + token_hex(6) + "_"
        originals: list[str] = []

        def swap(m: re.Match[str]) -> str:
            originals.append(m.group(0))
            return f"{prefix}{len(originals) - 1}__"

        return cls._REF_RE.sub(swap, text), cls(prefix, originals)

    def restore(self, text: str) -> str:
        if not self._originals:
            return text
        return self._token_re.sub(lambda m: self._originals[int(m.group(1))], text)


# ---------------------------------------------------------------------------------------------
# Walking nodes


@dataclass(frozen=True)
class YamlEntry:
    key_node: ScalarNode
    value: Node


class YamlReader:
    """Walks composed YAML nodes by schema, keeping each value's line for errors.

    With ``env`` (a mapping), string scalars containing ``${VAR}`` are expanded (dbguard.yaml),
    an unset VAR becoming ``unset`` when that is given; with ``env=None`` every scalar is taken
    literally (rule files: SQL may contain ``$``).
    ``locations`` maps each key path visited to its 1-based line.
    """

    def __init__(
        self, path: Path, env: Mapping[str, str] | None = None, refs: EnvRefs | None = None, unset: str | None = None
    ) -> None:
        self.path = path
        self.refs = refs
        self.env = env
        self.unset = unset
        self.base_dir = path.absolute().parent
        self.locations: dict[str, int] = {}

    # -- errors and node helpers --------------------------------------------------------------

    def err(self, node: Node | None, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.path, line_of(node), key, message)

    def _restore(self, text: str) -> str:
        return self.refs.restore(text) if self.refs is not None else text

    def mapping(self, node: Node, key: str, allowed: Sequence[str], depth: int = 0) -> dict[str, YamlEntry]:
        if not isinstance(node, MappingNode):
            raise self.err(node, key or None, f"expected a mapping, got {kind_of(node)}")
        if depth > _MAX_MERGE_DEPTH:
            raise self.err(node, key or None, "merge keys (<<) nested too deeply")
        if key:
            self.locations.setdefault(key, line_of(node) or 0)
        explicit: dict[str, YamlEntry] = {}
        merged: dict[str, YamlEntry] = {}
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag == TAG_MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                for src in sources:
                    for name, entry in self.mapping(src, key, allowed, depth + 1).items():
                        merged.setdefault(name, entry)
                continue
            if not isinstance(k, ScalarNode):
                raise self.err(k, key or None, f"keys must be plain strings, got {kind_of(k)}")
            name = self._restore(str(k.value))
            here = join_key(key, name)
            if name in explicit:
                first = line_of(explicit[name].key_node)
                raise self.err(k, here, f"duplicate key (first defined on line {first})")
            if name not in allowed:
                raise self.err(k, here, f"unknown key{suggest(name, allowed, listing=True)}")
            explicit[name] = YamlEntry(k, v)
        return {**merged, **explicit}

    def sequence(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.err(node, key, f"expected a list, got {kind_of(node)}")
        return list(node.value)

    def scalar_or_sequence(self, node: Node, key: str) -> list[tuple[Node, str]]:
        """A value that may be one scalar or a list of them, as (node, key path) pairs."""
        if isinstance(node, SequenceNode):
            return [(n, f"{key}[{i}]") for i, n in enumerate(self.sequence(node, key))]
        return [(node, key)]

    def present(self, entries: Mapping[str, YamlEntry], name: str) -> Node | None:
        """The value node of an optional key; an explicit null counts as absent."""
        entry = entries.get(name)
        if entry is None or is_null(entry.value):
            return None
        return entry.value

    def required(self, entries: Mapping[str, YamlEntry], parent: Node, key: str, name: str) -> Node:
        entry = entries.get(name)
        here = join_key(key, name)
        if entry is None:
            raise self.err(parent, here, "required key is missing")
        if is_null(entry.value):
            raise self.err(entry.value, here, "required key has no value")
        return entry.value

    def scalar(self, node: Node, key: str, what: str) -> tuple[str, str, bool]:
        """(text after ${ENV} expansion, YAML tag, whether ${...} was expanded)."""
        if not isinstance(node, ScalarNode):
            raise self.err(node, key, f"expected {what}, got {kind_of(node)}")
        self.locations.setdefault(key, line_of(node) or 0)
        raw = self._restore(str(node.value))
        if self.env is None or node.tag != TAG_STR or "$" not in raw:
            return raw, node.tag, False
        try:
            expanded = expand_env(raw, self.env, unset=self.unset)
        except ValueError as e:
            raise self.err(node, key, str(e)) from None
        return expanded, node.tag, "${" in raw.replace("$${", "")

    # -- typed values -------------------------------------------------------------------------

    def string(self, node: Node, key: str, *, secret: bool = False) -> str:
        text, tag, from_env = self.scalar(node, key, "a string")
        if tag == TAG_BOOL:
            hint = "" if secret else f" (quote it: '{text}')"
            raise self.err(node, key, f"expected a string, got a boolean{hint}")
        if tag == TAG_NULL:
            raise self.err(node, key, "expected a string, got null")
        if not text:
            why = " (its ${...} expanded to nothing)" if from_env else ""
            raise self.err(node, key, f"must not be empty{why}")
        if "\x00" in text:
            raise self.err(node, key, "must not contain NUL characters")
        return text

    def name(self, node: Node, key: str, pattern: re.Pattern[str], allowed: str) -> str:
        text = self.string(node, key)
        if not pattern.match(text):
            raise self.err(node, key, f"expected a name of {allowed}, got {echo(text)}")
        return text

    def boolean(self, node: Node, key: str) -> bool:
        text, tag, from_env = self.scalar(node, key, "true or false")
        if tag == TAG_BOOL or from_env:
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        shown = "" if from_env else f", got {echo(text)}"
        raise self.err(node, key, f"expected true or false{shown}")

    def integer(self, node: Node, key: str, minimum: int) -> int:
        text, tag, from_env = self.scalar(node, key, "an integer")
        if (tag == TAG_INT or from_env) and _INT_RE.match(text.strip()):
            value = int(text.strip().replace("_", ""))
            if value < minimum:
                raise self.err(node, key, f"must be at least {minimum}, got {value}")
            return value
        raise self.err(node, key, f"expected a whole number >= {minimum}, got {echo(text)}")

    def choice(self, node: Node, key: str, enum: type[_E], *, fold_case: bool = False) -> _E:
        text = self.string(node, key)
        lookup = text.lower() if fold_case else text
        try:
            return enum(lookup)
        except ValueError:
            options = enum_values(enum)
            raise self.err(
                node,
                key,
                f"expected one of {choices(enum)}, got {echo(text)}{suggest(lookup, options)}",
            ) from None


# ---------------------------------------------------------------------------------------------
# Small helpers


def line_of(node: Node | None) -> int | None:
    if node is None or node.start_mark is None:
        return None
    return int(node.start_mark.line) + 1


def join_key(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == TAG_NULL


def value_of(mapping: Node, name: str) -> Node | None:
    """The value node of ``name`` in a mapping node (the mapping itself when absent)."""
    if isinstance(mapping, MappingNode):
        for k, v in mapping.value:
            if isinstance(k, ScalarNode) and k.value == name and isinstance(v, Node):
                return v
    return mapping


def kind_of(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        TAG_NULL: "null",
        TAG_BOOL: "a boolean",
        TAG_INT: "a number",
        TAG_FLOAT: "a number",
        TAG_STR: "a string",
    }.get(node.tag, "a scalar")


def echo(text: str) -> str:
    """Quote a (non-secret) value for an error message, cut to a readable length."""
    if len(text) > MAX_ECHO:
        text = text[: MAX_ECHO - 3] + "..."
    return repr(text)


def enum_values(enum: type[StrEnum]) -> list[str]:
    return [e.value for e in enum]


def choices(enum: type[StrEnum]) -> str:
    return ", ".join(enum_values(enum))


def suggest(word: str, options: Sequence[str], *, listing: bool = False) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if listing:
        return f" (expected one of: {', '.join(options)})"
    return ""
