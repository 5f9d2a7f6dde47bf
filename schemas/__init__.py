"""The hive.yaml format: pydantic models (the one definition), loader and whole-file checks."""

from schemas.loader import ConfigError, LocatedProblem, load, load_text, with_trusted_server
from schemas.models import HiveConfig, Key, Repository

__all__ = ["ConfigError", "HiveConfig", "Key", "LocatedProblem", "Repository", "load",
           "load_text", "with_trusted_server"]
