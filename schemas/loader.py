"""Load hive.yaml: YAML with positions -> pydantic models -> whole-file checks.

Nothing reaches the system unless the whole file is right, so this collects every problem
(not only the first), each as `FILE:LINE:COL: path.to.field: message`.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from schemas import checks, yamlsource
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


def load_text(text: str, file: str, base_dir: Path | None = None,
              extra_checks: Callable[[HiveConfig], list[checks.Problem]] | None = None,
              ) -> HiveConfig:
    """Validate hive.yaml text; raise ConfigError listing every problem.

    `extra_checks` are costly checks only some commands run (apprise URL parsing)."""
    base = base_dir if base_dir is not None else Path(file).resolve().parent
    try:
        document = yamlsource.parse(text)
    except yamlsource.YamlSyntaxError as exc:
        raise ConfigError([LocatedProblem(file, exc.mark.line, exc.mark.column, "",
                                          exc.message)]) from None
    data = document.data

    def located(problem: checks.Problem) -> LocatedProblem:
        mark = document.locate(problem.path, key=problem.key)
        return LocatedProblem(file, mark.line, mark.column, _dotted(problem.path),
                              problem.message)

    result = [LocatedProblem(file, m.line, m.column, "", msg)
              for m, msg in document.duplicates]
    if not isinstance(data, dict):
        result.append(LocatedProblem(file, 1, 1, "", "the file must be a mapping with "
                                     "'version:', 'server:' and 'repositories:'"))
        raise ConfigError(result)
    config = None
    try:
        config = HiveConfig.model_validate(data, context={"base_dir": base})
    except pydantic.ValidationError as exc:
        result.extend(located(p) for p in _pydantic_problems(exc))
    if config is not None:
        result.extend(located(p) for p in checks.check(config))
        if extra_checks is not None:
            result.extend(located(p) for p in extra_checks(config))
    if result:
        result.sort(key=lambda p: (p.line, p.column))
        raise ConfigError(result)
    assert config is not None
    return config


def load(path: Path | str,
         extra_checks: Callable[[HiveConfig], list[checks.Problem]] | None = None,
         ) -> HiveConfig:
    """Read and validate hive.yaml from disk."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([LocatedProblem(str(path), 1, 1, "", "file not found; give the "
                                          "file with -f or set HIVE_CONFIG")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([LocatedProblem(str(path), 1, 1, "", f"cannot read: {exc}")]) \
            from None
    return load_text(text, str(path), path.resolve().parent, extra_checks)


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

