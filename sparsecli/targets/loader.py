"""Load and validate hardware target files.

Every failure becomes one `InputFileError` line naming the file, the field's dotted
path and how to fix it, so the CLI can print it without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from sparsecli.errors import InputFileError
from sparsecli.params import load_yaml
from sparsecli.targets.schema import CpuTarget, FpgaTarget, Target, TargetModel

_ADAPTER: TypeAdapter = TypeAdapter(TargetModel)
_MODELS: dict[str, type[BaseModel]] = {"cpu": CpuTarget, "fpga": FpgaTarget}
_SCHEMA_DOC = "hardware/README.md"


def load_target(path: str | Path) -> Target:
    """Read and validate one target file; its `name` must equal the file's stem."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())  # YAML 1.2 as params are read: structures: [2:4] is a string
    except FileNotFoundError:
        raise InputFileError(f"{path}: target file not found; check the path or list hardware/") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read target file ({e.strerror})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputFileError(f"{path}: not valid YAML{line}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise InputFileError(f"{path}: expected a mapping of fields at the top level (schema: {_SCHEMA_DOC})")
    try:
        target = _ADAPTER.validate_python(raw)
    except ValidationError as e:
        raise InputFileError(_describe(path, raw, e)) from None
    if target.name != path.stem:
        raise InputFileError(f"{path}: name: is {target.name!r} but must equal the file name; set name: {path.stem}")
    target._source = path
    return target


def load_targets(directory: str | Path, names: Sequence[str] | None = None) -> dict[str, Target]:
    """Load the named targets (all `*.yaml` in `directory` when `names` is None), in order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputFileError(f"{directory}: hardware directory not found")
    available = sorted(p.stem for p in directory.glob("*.yaml"))
    if names is None:
        names = available
    unknown = [name for name in names if name not in available]
    if unknown:
        raise InputFileError(
            f"{directory}: no target file for {', '.join(unknown)}; available: {', '.join(available) or 'none'}"
        )
    return {name: load_target(directory / f"{name}.yaml") for name in names}


def _describe(path: Path, raw: dict, error: ValidationError) -> str:
    """One line for the first validation error: file, field path, problem, fix."""
    first = error.errors()[0]
    loc = list(first["loc"])
    kind = raw.get("kind")
    if first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return f"{path}: kind: must be one of cpu, fpga (got {kind!r}); set kind: cpu or kind: fpga"
    if loc and loc[0] == kind:  # discriminated union prefixes the tag
        loc = loc[1:]
    field = ".".join(str(part) for part in loc) or "(top level)"
    more = error.error_count() - 1
    suffix = f" ({more} more error{'s' if more > 1 else ''})" if more else ""
    model = _MODELS.get(kind)
    if first["type"] == "missing":
        return f"{path}: {field}: missing required field; add it (schema: {_SCHEMA_DOC}){suffix}"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{path}: {field}: unknown key{hint}{suffix}"
    message = first["msg"].removeprefix("Value error, ")
    if not loc:  # a cross-field check: its message names the fields
        return f"{path}: {message}{suffix}"
    if loc[-1] == "[key]":
        field = ".".join(str(part) for part in loc[:-2])
        return f"{path}: {field}: key {loc[-2]!r}: {message}; fix the key (schema: {_SCHEMA_DOC}){suffix}"
    got = "" if isinstance(first.get("input"), dict | list) else f" (got {first['input']!r})"
    return f"{path}: {field}: {message}{got}; fix the value (schema: {_SCHEMA_DOC}){suffix}"


def _allowed_keys(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """Field names of the sub-model at `loc`, or [] when that is not a model."""
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        model = _as_model(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def _as_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _as_model(arg)
            if found is not None:
                return found
    return None
