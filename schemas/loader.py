"""Load hive.yaml: YAML with positions -> pydantic models -> whole-file checks.

Nothing reaches the system unless the whole file is right, so this collects every problem
(not only the first), each as `FILE:LINE:COL: path.to.field: message`.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from schemas import checks, includes, parsecache, yamlsource
from schemas.memory import no_cycle_collection
from schemas.models import (
    DURATION_PATTERN,
    NAME_PATTERN,
    QUOTA_PATTERN,
    SECRET_FIELD,
    HiveConfig,
)
from schemas.yamllimits import MAX_VALUES, count_values

# Messages quote what the file says, and a value can be 30,000 characters long: keep the
# start (what it was) and the end (what to do), in every problem, in one place.
MAX_MESSAGE = 500


@dataclass(frozen=True)
class LocatedProblem:
    file: str
    line: int
    column: int
    path: str
    message: str

    def __post_init__(self) -> None:
        if len(self.message) > MAX_MESSAGE:
            cut = len(self.message) - 400
            object.__setattr__(self, "message", f"{self.message[:250]} [... {cut:,} "
                                                f"characters ...] {self.message[-150:]}")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    @property
    def data(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "path": self.path, "message": self.message}


class ConfigError(Exception):
    """hive.yaml is not valid; `problems` lists every reason, in file order."""

    def __init__(self, problems: list[LocatedProblem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


_FRIENDLY_PATTERNS = {
    NAME_PATTERN: "use lowercase letters, digits, '_', '.' and '-', starting with a letter "
                  "or digit, at most 32 characters",
    QUOTA_PATTERN: "use a number with an optional decimal unit as borg takes it: "
                   "500G, 1.5T, 800M (K, M, G, T, P are powers of 1000)",
    DURATION_PATTERN: "use a whole number and a unit: 90s, 30m, 26h, 3d, 2w",
}


def _dotted(path: tuple[Any, ...], key: bool = False) -> str:
    """('keys', 'k', 'from', 0) -> 'keys.k.from[0]'; with `key`, the last step is a mapping
    key even when YAML made it a number: ('repositories', 1) -> 'repositories.1'."""
    text = ""
    for i, step in enumerate(path):
        if type(step) is int and not (key and i == len(path) - 1):
            text += f"[{step}]"
        else:
            name = _clip(step if isinstance(step, str) else _shown(step), 60)
            if not name.isprintable():  # a newline or escape in a key would forge lines
                name = json.dumps(name)  # of the plan a pull request shows ("No changes.")
            text += f".{name}" if text else name
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# What YAML made of an unquoted value, in the words of the YAML spec, for messages.
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "bool"), (int, "int"), (float, "float"), (str, "text"), (bytes, "binary"),
    (dt.datetime, "timestamp"), (dt.date, "date"), (list, "list"), (dict, "mapping"),
    (set, "set"), (type(None), "null"))


def _kind(value: Any) -> str:
    return next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)


def _shown(value: Any) -> str:
    """A YAML value as the user wrote it, whatever its type, short, never raising: dates,
    binary, sets and 4,000-digit numbers all reach error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value.bit_length() > 128:
            return f"a number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
        return str(value)
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(_clip(value, 60))
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"{len(value):,} bytes"
    if isinstance(value, (list, dict, set)):
        return f"a {_kind(value)} of {len(value):,} entries"
    return _clip(type(value).__name__, 40)


# pydantic error type -> what the field wanted, for values of the wrong YAML type.
_EXPECTED = {
    "string_type": "a name or text",
    "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list",
    "dict_type": "a mapping (name: value)", "model_type": "a mapping (field: value)",
    "model_attributes_type": "a mapping (field: value)",
    "path_type": "a path", "literal_error": None,
    "date_type": "a date (2027-06-30) or time (2027-06-30T12:00:00Z)",
    "date_parsing": "a date (2027-06-30) or time (2027-06-30T12:00:00Z)",
    "datetime_type": "a date (2027-06-30) or time (2027-06-30T12:00:00Z)",
    "datetime_parsing": "a date (2027-06-30) or time (2027-06-30T12:00:00Z)",
    "datetime_from_date_parsing": "a date (2027-06-30) or time (2027-06-30T12:00:00Z)",
}


def _wrong_type(kind: str, value: Any) -> str | None:
    """'YAML reads this as 2024-01-01 (date), not a name or text: put it in quotes'."""
    expected = _EXPECTED.get(kind)
    if expected is None:
        return None
    text = f"YAML reads this as {_shown(value)} ({_kind(value)}), not {expected}"
    if (kind == "string_type" and isinstance(value, (bool, int, float, dt.date, bytes))) \
            or (value is None and kind == "string_type"):
        return text + ": put it in quotes"
    if isinstance(value, str) and expected in ("a whole number", "true or false"):
        return text + ": write it without quotes"
    if expected == "a list" and isinstance(value, str):
        return text + f": write it as a list, [{_clip(value, 40)}]"
    return text


def _model_at(path: tuple[Any, ...]) -> type[pydantic.BaseModel] | None:
    """The model class whose fields live at `path`, to list what a typo could have meant."""
    model: Any = HiveConfig
    annotation: Any = None
    for step in path:
        if annotation is not None and typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            model = annotation if isinstance(annotation, type) else None
            annotation = None
            continue
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return None
        field = next((f for name, f in model.model_fields.items()
                      if step in (name, f.alias)), None)
        if field is None:
            return None
        annotation = field.annotation
        model = annotation
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        return model
    return None


def _message(error: Any, path: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        field = path[-1] if isinstance(path[-1], str) else _shown(path[-1])
        field = _clip(field, 60)
        if SECRET_FIELD.search(field):
            return (f"{field!r} looks like a secret; secrets never live in hive.yaml (it is "
                    f"committed to git): use '{field}_env' (an environment variable name) or "
                    f"'{field}_file' (a file path) where the section supports it")
        model = _model_at(path[:-1])
        known = ", ".join((f.alias or n) for n, f in model.model_fields.items()) if model else ""
        return f"unknown field {field!r}" + (f"; expected one of: {known}" if known else "")
    if kind == "missing":
        return f"missing required field {path[-1]!r}"
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        hint = _FRIENDLY_PATTERNS.get(pattern, f"must match {pattern}")
        value = error.get("input")
        return f"invalid value {_clip(repr(value), 80)}: {hint}"
    if "parsing" in kind and kind.startswith("date") and isinstance(error.get("input"), str):
        reason = error["msg"].split(", ", 1)[-1]
        return (f"{_shown(error['input'])} is not a date or time ({reason}): write "
                "2027-06-30 or 2027-06-30T12:00:00Z")
    if kind in _EXPECTED and _wrong_type(kind, error.get("input")):
        return str(_wrong_type(kind, error.get("input")))
    if kind == "too_long" and isinstance(error.get("input"), list):
        most = error.get("ctx", {}).get("max_length", "?")
        return (f"has {len(error['input']):,} entries; at most {most} are allowed here "
                "(for from:, a network such as 192.168.1.0/24 covers many addresses)")
    bounds = {"greater_than_equal": "at least", "less_than_equal": "at most",
              "greater_than": "above", "less_than": "below"}
    if kind in bounds:
        limit = next(iter(error.get("ctx", {}).values()), "?")
        return f"{_shown(error.get('input'))} is out of range: it must be {bounds[kind]} {limit}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _pydantic_problems(exc: pydantic.ValidationError) -> list[checks.Problem]:
    problems: list[checks.Problem] = []
    seen: set[tuple[Any, ...]] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = bool(loc) and loc[-1] == "[key]"
        if key:
            # pydantic turns a key like True (YAML's `yes:`) into 1; the input is the key
            loc = (*loc[:-2], error.get("input", loc[-2]))
        # Union members add their type name to the path; it means nothing to the user.
        loc = tuple(s for s in loc if not (isinstance(s, str) and (
            s.startswith(("function-", "tagged-union")) or s in ("date", "datetime"))))
        if loc[:2] == ("server", "identity") and len(loc) > 2 and loc[2] in ("files", "ldap"):
            loc = loc[:2] + loc[3:]  # the discriminated union repeats the backend's name
        key = key or error["type"] == "extra_forbidden"  # point at the unknown name itself
        if loc in seen:  # a union (date | datetime) fails once per member: say it once
            continue
        seen.add(loc)
        problems.append(checks.Problem(loc, _message(error, loc), key=key))
    return problems


@dataclass
class _Source:
    """One file read: the name problems give it, and its parsed text for positions."""

    file: str
    document: yamlsource.Document


def _parse(text: str, file: str) -> yamlsource.Document:
    """The parsed file, from schemas/parsecache.py when these bytes were parsed before."""
    cached = parsecache.get(text)
    if cached is not parsecache.MISS:
        return yamlsource.Document(cached, None, [], text)
    try:
        document = yamlsource.parse(text)
    except yamlsource.YamlSyntaxError as exc:
        raise ConfigError([LocatedProblem(file, exc.mark.line, exc.mark.column, "",
                                          exc.message)]) from None
    if not document.duplicates:   # a file with duplicates is refused: nothing to keep
        parsecache.put(text, document.data)
    return document


def _include(data: dict[Any, Any], main: _Source, main_path: Path,
             sources: list[_Source], origins: dict[tuple[Any, ...], _Source],
             result: list[LocatedProblem]) -> dict[Any, Any]:
    """`data` with the sections of every included file merged in; `sources` and
    `origins` learn which file each name came from. Problems that leave nothing sensible
    to validate (a bad pattern, a file that is not YAML) raise at once."""
    patterns = data.get("include")
    if not isinstance(patterns, list):
        return data   # not a list: the model says so, at the right place
    early: list[LocatedProblem] = []
    label_dir = str(Path(main.file).parent)
    label_dir = "" if label_dir == "." else label_dir
    matches: list[includes.Match] = []
    seen: set[Path] = set()
    looks = includes.Looks()  # one budget for every pattern
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            continue   # the model reports it
        found, why = includes.expand(pattern, main_path, label_dir, looks)
        if why:
            mark = main.document.locate(("include", i))
            early.append(LocatedProblem(main.file, mark.line, mark.column, f"include[{i}]",
                                        why))
            if looks.left < 0:
                break  # the budget is spent: the patterns after it would only say so too
        for match in found:
            if match.path not in seen:
                seen.add(match.path)
                matches.append(match)
    if len(matches) > includes.MAX_FILES:
        mark = main.document.locate(("include",), key=True)
        raise ConfigError([LocatedProblem(
            main.file, mark.line, mark.column, "include",
            f"the patterns match {len(matches):,} files, more than {includes.MAX_FILES:,}; "
            "split the fleet into fewer, larger files")])
    # The whole desired state, every file together, within what one file may hold
    values = count_values(data, MAX_VALUES)
    try:
        size = main_path.stat().st_size
    except OSError:
        size = 0
    too_many = f"more than {MAX_VALUES:,} values"
    parsed: list[tuple[_Source, dict[Any, Any]]] = []
    for match in matches:
        try:
            text = _read(match.path, match.label)
            size += len(text.encode())
            if size > MAX_FILE_BYTES:
                raise ConfigError([LocatedProblem(
                    match.label, 1, 1, "", f"with the files before it, the main file and "
                    f"its includes hold more than {MAX_FILE_BYTES // 2**20} MB; that is no "
                    "hive.yaml")])
            source = _Source(match.label, _parse(text, match.label))
        except ConfigError as exc:
            early.extend(exc.problems)
            if size > MAX_FILE_BYTES or any(too_many in p.message for p in exc.problems):
                raise ConfigError(early) from None  # the budget is spent: stop here
            continue
        values += count_values(source.document.data, MAX_VALUES - values)
        if values > MAX_VALUES:
            raise ConfigError([*early, LocatedProblem(
                match.label, 1, 1, "", f"with the files before it, more than "
                f"{MAX_VALUES:,} values in all: are aliases (*name) expanding each other?")])
        sources.append(source)
        result.extend(LocatedProblem(source.file, m.line, m.column, "", msg)
                      for m, msg in source.document.duplicates)
        body = source.document.data
        if body is None:
            body = {}
        if not isinstance(body, dict):
            early.append(LocatedProblem(source.file, 1, 1, "", "an included file must be a "
                                        f"mapping with {', '.join(includes.SECTIONS)}"))
            continue
        for key, value in body.items():
            why = includes.section_problem(key, value)
            if why:
                mark = source.document.locate((key,), key=True)
                early.append(LocatedProblem(source.file, mark.line, mark.column, str(key),
                                            why))
        parsed.append((source, body))
    if early:
        raise ConfigError(early)
    merged = dict(data)
    for section in includes.SECTIONS:
        own = merged.get(section)
        if own is None:
            own = {}
        if not isinstance(own, dict):
            continue   # the model reports the main file's section
        combined = dict(own)
        for source, body in parsed:
            for name, value in (body.get(section) or {}).items():
                if name in combined:
                    first = origins.get((section, name), main)
                    here = source.document.locate((section, name), key=True)
                    there = first.document.locate((section, name), key=True)
                    what = f"{includes.SINGULAR[section]} {name!r}"
                    result.append(LocatedProblem(
                        source.file, here.line, here.column, f"{section}.{name}",
                        f"{what} is also defined in {first.file}:{there.line}:"
                        f"{there.column}; each name may appear once across all files"))
                    result.append(LocatedProblem(
                        first.file, there.line, there.column, f"{section}.{name}",
                        f"{what} is also defined in {source.file}:{here.line}:"
                        f"{here.column}; each name may appear once across all files"))
                    continue
                combined[name] = value
                origins[(section, name)] = source
        if section in merged or combined:
            merged[section] = combined
    return merged


def load_text(text: str, file: str, base_dir: Path | None = None,
              path: Path | None = None, *,
              extra_checks: Callable[[HiveConfig], list[checks.Problem]] | None = None,
              ) -> HiveConfig:
    """Validate hive.yaml text; raise ConfigError listing every problem. `path` (the file
    on disk) is where `include:` patterns are resolved from; without it, from `base_dir`.
    `extra_checks` are costly checks only some commands run (apprise URL parsing)."""
    with no_cycle_collection():
        return _load_text(text, file, base_dir, path, extra_checks=extra_checks)


def _load_text(text: str, file: str, base_dir: Path | None, path: Path | None, *,
               extra_checks: Callable[[HiveConfig], list[checks.Problem]] | None,
               ) -> HiveConfig:
    base = base_dir if base_dir is not None else Path(file).resolve().parent
    main = _Source(file, _parse(text, file))
    data = main.document.data
    sources = [main]
    origins: dict[tuple[Any, ...], _Source] = {}

    def origin(problem: checks.Problem) -> _Source:
        return origins.get(problem.path[:2], main) if len(problem.path) >= 2 else main

    def located(problem: checks.Problem) -> LocatedProblem:
        source = origin(problem)
        mark = source.document.locate(problem.path, key=problem.key)
        return LocatedProblem(source.file, mark.line, mark.column,
                              _dotted(problem.path, problem.key),
                              problem.message)

    result = [LocatedProblem(file, m.line, m.column, "", msg)
              for m, msg in main.document.duplicates]
    if not isinstance(data, dict):
        result.append(LocatedProblem(file, 1, 1, "", "the file must be a mapping with "
                                     "'version:', 'server:' and 'repositories:'"))
        raise ConfigError(result)
    if "include" in data:
        data = _include(data, main, path or base / Path(file).name, sources, origins,
                        result)
    config = None
    found: list[checks.Problem] = []
    try:
        config = HiveConfig.model_validate(data, context={"base_dir": base})
    except pydantic.ValidationError as exc:
        found.extend(_pydantic_problems(exc))
    if config is not None:
        found.extend(checks.check(config))
        if extra_checks is not None:
            found.extend(extra_checks(config))
    if found:
        # Ask each file for all its positions at once: one pass over its text finds them.
        wanted: dict[int, tuple[_Source, list[tuple[Any, ...]]]] = {}
        for problem in found:
            source = origin(problem)
            wanted.setdefault(id(source), (source, []))[1].append(problem.path)
        for source, paths in wanted.values():
            source.document.prefetch(paths)
        result.extend(located(p) for p in found)
    if result:
        order = {source.file: i for i, source in enumerate(sources)}
        result.sort(key=lambda p: (order.get(p.file, 0), p.line, p.column))
        raise ConfigError(result)
    assert config is not None
    config._sources = tuple(source.file for source in sources)
    return config


# A hive.yaml of 5,000 repositories is ~2.3 MB; a bound keeps `-f /dev/zero` (or a
# proposal's hive.yaml symlinked to it) from reading until memory runs out.
MAX_FILE_BYTES = 64 * 2**20


def _read(path: Path, label: str) -> str:
    """The text of a hive.yaml; every way it can fail is a problem at `label`:1:1 (or at
    the line and column of the first byte that is not UTF-8)."""

    def fail(message: str) -> ConfigError:
        return ConfigError([LocatedProblem(label, 1, 1, "", message)])

    if path.is_dir():
        inside = path / "hive.yaml"
        raise fail("is a directory, not a hive.yaml file; " + (
            f"did you mean -f {inside}?" if inside.is_file() else
            "give the file itself with -f FILE (or set HIVE_CONFIG)"))
    try:
        with open(path, "rb") as handle:  # pipes too: -f <(git show main:hive.yaml)
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise fail("file not found; give the file with -f or set HIVE_CONFIG") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"is larger than {MAX_FILE_BYTES // 2**20} MB; that is no hive.yaml")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise ConfigError([LocatedProblem(label, line, column, "", "not UTF-8 text (byte "
                                          f"0x{data[exc.start]:02x}); save the file as "
                                          "UTF-8")]) from None


def load(path: Path | str, *,
         extra_checks: Callable[[HiveConfig], list[checks.Problem]] | None = None,
         ) -> HiveConfig:
    """Read and validate hive.yaml (and the files it includes) from disk.

    The loaded state lives as long as the command, and at 50,000 repositories it is 1.5
    million objects without a reference cycle: they are moved out of the cyclic
    collector's sight (gc.freeze), which otherwise walks all of them again each time the
    plan that follows allocates enough (that halved the time of a plan-sized allocation
    after loading). Reference counting still frees them.
    """
    path = Path(path)
    config = load_text(_read(path, str(path)), str(path), path.resolve().parent, path,
                       extra_checks=extra_checks)
    gc.freeze()
    return config


def with_trusted_server(config: HiveConfig, trusted: HiveConfig, file: str) -> HiveConfig:
    """`config` with the `server:` section of `trusted`.

    For plans of a proposed hive.yaml (a pull request): the server section says which
    files Hive reads, which directory it binds to and where secrets come from, so an
    untrusted proposal must not choose it; the rest of the proposal is checked again
    against the trusted settings (the user-name prefix, for one).
    """
    merged = config.model_copy(update={"server": trusted.server})
    problems = checks.check(merged)
    if problems:
        raise ConfigError([LocatedProblem(file, 1, 1, _dotted(p.path, p.key),
                                          f"{p.message} (with the trusted server: section)")
                           for p in problems])
    return merged

