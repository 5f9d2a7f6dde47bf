"""Load hive.yaml: YAML with positions -> pydantic models -> whole-file checks.

Nothing reaches the system unless the whole file is right, so this collects every problem
(not only the first), each as `FILE:LINE:COL: path.to.field: message`.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from schemas import checks, includes, parsecache, yamlsource
from schemas.models import (
    DURATION_PATTERN,
    NAME_PATTERN,
    QUOTA_PATTERN,
    SECRET_FIELD,
    HiveConfig,
)


@dataclass(frozen=True)
class LocatedProblem:
    file: str
    line: int
    column: int
    path: str
    message: str

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


def _dotted(path: tuple[Any, ...]) -> str:
    """('keys', 'k', 'from', 0) -> 'keys.k.from[0]'"""
    text = ""
    for step in path:
        text += f"[{step}]" if type(step) is int else (f".{step}" if text else str(step))
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
        field = str(path[-1])
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
        return f"invalid value {value!r}: {hint}"
    if kind == "string_type" and not isinstance(error.get("input"), str):
        value = error.get("input")
        return (f"YAML reads this as {json.dumps(value)} ({type(value).__name__}), not a "
                "name or text: put it in quotes")
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


def _read(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([LocatedProblem(label, 1, 1, "", "file not found; give the "
                                          "file with -f or set HIVE_CONFIG")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([LocatedProblem(label, 1, 1, "", f"cannot read: {exc}")]) \
            from None


def _include(data: dict[Any, Any], main: _Source, main_path: Path,
             sources: list[_Source], origins: dict[tuple[Any, Any], _Source],
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
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            continue   # the model reports it
        found, why = includes.expand(pattern, main_path, label_dir)
        if why:
            mark = main.document.locate(("include", i))
            early.append(LocatedProblem(main.file, mark.line, mark.column, f"include[{i}]",
                                        why))
        matches.extend(m for m in found if m.path not in {n.path for n in matches})
    parsed: list[tuple[_Source, dict[Any, Any]]] = []
    for match in matches:
        try:
            source = _Source(match.label, _parse(_read(match.path, match.label),
                                                 match.label))
        except ConfigError as exc:
            early.extend(exc.problems)
            continue
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
              path: Path | None = None) -> HiveConfig:
    """Validate hive.yaml text; raise ConfigError listing every problem. `path` (the file
    on disk) is where `include:` patterns are resolved from; without it, from `base_dir`."""
    base = base_dir if base_dir is not None else Path(file).resolve().parent
    main = _Source(file, _parse(text, file))
    data = main.document.data
    sources = [main]
    origins: dict[tuple[Any, Any], _Source] = {}

    def located(problem: checks.Problem) -> LocatedProblem:
        source = origins.get(problem.path[:2], main) if len(problem.path) >= 2 else main
        mark = source.document.locate(problem.path, key=problem.key)
        return LocatedProblem(source.file, mark.line, mark.column, _dotted(problem.path),
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
    try:
        config = HiveConfig.model_validate(data, context={"base_dir": base})
    except pydantic.ValidationError as exc:
        result.extend(located(p) for p in _pydantic_problems(exc))
    if config is not None:
        result.extend(located(p) for p in checks.check(config))
    if result:
        order = {source.file: i for i, source in enumerate(sources)}
        result.sort(key=lambda p: (order.get(p.file, 0), p.line, p.column))
        raise ConfigError(result)
    assert config is not None
    config._sources = tuple(source.file for source in sources)
    return config


def load(path: Path | str) -> HiveConfig:
    """Read and validate hive.yaml (and the files it includes) from disk."""
    path = Path(path)
    return load_text(_read(path, str(path)), str(path), path.resolve().parent, path)


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
        raise ConfigError([LocatedProblem(file, 1, 1, _dotted(p.path),
                                          f"{p.message} (with the trusted server: section)")
                           for p in problems])
    return merged

