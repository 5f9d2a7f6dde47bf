"""The JSON Schema of hive.yaml, generated from the models (never edited by hand).

`hive schema --write schemas/hive.schema.json` refreshes the committed copy; a test fails
when it is stale. Editors use it through `# yaml-language-server: $schema=...`.
"""

from __future__ import annotations

import json

from schemas.models import HiveConfig

SCHEMA_ID = "https://hive.invalid/schemas/hive.schema.json"


def render() -> str:
    schema = HiveConfig.model_json_schema(by_alias=True, mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
              **schema}
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
