"""The configuration reference of the docs site, generated from the service spec's models.

``python -m deployments.spec_reference`` writes ``docs/reference/spec.md`` from
``deployflow.spec.ServiceSpec`` and every section it holds (each backend kind from the registry
included): each key with its type, default and description. ``--check`` writes nothing and exits 1
when the committed file differs from what the models give; ``make lint`` runs it.

Why a committed file checked by ``make lint`` rather than a mkdocs hook that generates the page at
build time: the reference stays readable where the code is (on the forge, in an editor, in a
review), a change to a field shows its documentation change in the same diff, and ``mkdocs build``
stays a plain build of committed files. The price is one command after changing a model
(``make spec-reference``), which ``make lint`` (and so CI) enforces; a merge conflict in the
generated file is resolved by running it again.

It lives in ``deployments`` (the outermost layer, which may import the core) so that mypy strict
checks it, and it imports only the core (``deployflow``), never Prefect.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AwareDatetime, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from deployflow.spec import ServiceSpec
from deployflow.spec_types import Argv, Duration, HttpUrl, format_duration

REFERENCE_PATH = Path("docs/reference/spec.md")
REGENERATE = "make spec-reference"

_DURATION_CHECK = get_args(Duration)[1]
_ARGV_CHECK = get_args(Argv)[1]
_URL_CHECK = get_args(HttpUrl)[1]

_INTRO = f"""\
<!-- Generated from the spec's pydantic models by deployments/spec_reference.py: do not edit.
     Regenerate with `{REGENERATE}`; `make lint` fails while this file is out of date. -->

# Service spec reference

A service is described by one YAML file, the service spec. This page lists every key the spec
accepts, generated from the models that validate it, so it always matches what `deployflow
validate` checks. For what the sections mean and how they work together, see
[The service spec](../configuration/index.md); `examples/sandbox.yaml` is an annotated example.

How to read it:

- Unknown keys are errors, reported with their path.
- A **duration** is written with its unit: `250ms`, `30s`, `10m` or `1h` (greater than zero, at
  most 7 days). Defaults below are shown the same way.
- An **argv list** is a command as a list of arguments, run without a shell: `["pytest", "-q"]`,
  never `"pytest -q"`.
- A **URL** is an `http://` or `https://` URL; a trailing `/` is dropped.
- `${{VAR}}` and `${{VAR:-default}}` in any string value are read from the environment before
  the spec is validated.
- Sections chosen by `kind` (the target, the router, the metrics source, notifiers, on-call,
  dashboards, log sources, alerts, dependencies, the flag provider, the strategy) have one table
  per kind.
- *required* means the key must be given; *not set* means it is optional and off when left out.
"""


@dataclass
class _Occurrence:
    """Where a model sits in the spec: its key path and the ``kind`` that selects it."""

    path: str
    kind: tuple[str, str] | None  # (path of the kind-selected section, kind), innermost

    def text(self) -> str:
        if self.kind is None:
            return f"`{self.path}`"
        section, kind = self.kind
        if section == self.path:
            return f"`{self.path}` with `kind: {kind}`"
        return f"`{self.path}` (when `{section}` has `kind: {kind}`)"


@dataclass
class _Section:
    model: type[BaseModel]
    occurrences: list[_Occurrence] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        first = self.occurrences[0]
        words = first.path if first.kind is None else f"{first.path} {first.kind[1]}"
        return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-") or "top-level"


def _strip_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    """The bare type and the metadata of any ``Annotated`` layers around it."""
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        annotation = inner
        for item in extra:
            # Field(...) inside Annotated carries its constraints in its own metadata.
            metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, metadata


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_members(annotation: Any) -> list[Any] | None:
    if get_origin(annotation) in (Union, types.UnionType):
        return list(get_args(annotation))
    return None


def _kind_of(model: type[BaseModel]) -> str | None:
    kind = model.model_fields.get("kind")
    if kind is None or get_origin(kind.annotation) is not Literal:
        return None
    (value,) = get_args(kind.annotation)
    return str(value)


def _collect(
    model: type[BaseModel],
    path: str,
    kind: tuple[str, str] | None,
    sections: dict[type[BaseModel], _Section],
) -> None:
    """Every model reachable from ``model``, in the order of the spec's keys, with every place it
    is used."""
    known = model in sections
    section = sections.setdefault(model, _Section(model))
    occurrence = _Occurrence(path, kind)
    if occurrence not in section.occurrences:
        section.occurrences.append(occurrence)
    if known:
        return
    for name, info in model.model_fields.items():
        _collect_type(info.annotation, f"{path}.{name}" if path else name, kind, sections)


def _collect_type(
    annotation: Any,
    path: str,
    kind: tuple[str, str] | None,
    sections: dict[type[BaseModel], _Section],
) -> None:
    annotation, _ = _strip_annotated(annotation)
    if _is_model(annotation):
        _collect(annotation, path, kind, sections)
        return
    members = _union_members(annotation)
    if members is not None:
        models = [m for m in (_strip_annotated(m)[0] for m in members) if _is_model(m)]
        kinds = [_kind_of(m) for m in models]
        for member in members:
            bare = _strip_annotated(member)[0]
            if _is_model(bare) and len(models) > 1 and None not in kinds:
                _collect(bare, path, (path, _kind_of(bare) or ""), sections)
            else:
                _collect_type(member, path, kind, sections)
        return
    origin = get_origin(annotation)
    if origin is list:
        (item,) = get_args(annotation)
        _collect_type(item, f"{path}[]", kind, sections)
    elif origin is dict:
        _, value = get_args(annotation)
        _collect_type(value, f"{path}.*", kind, sections)


def _constraints(metadata: Sequence[Any]) -> list[str]:
    found: list[str] = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            found.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            found.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            found.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            found.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            found.append("not empty" if item.min_length == 1 else f"at least {item.min_length}")
        elif isinstance(item, annotated_types.MaxLen):
            found.append(f"at most {item.max_length}")
        elif getattr(item, "pattern", None):
            found.append(f"matching `{item.pattern}`")
    return found


def _type_text(
    annotation: Any, metadata: Sequence[Any], sections: dict[type[BaseModel], _Section]
) -> str:
    """The type of a key in words, its constraints in brackets, models as links."""
    annotation, inner = _strip_annotated(annotation)
    metadata = [*metadata, *inner]
    if _DURATION_CHECK in metadata:
        base = "duration"
    elif _ARGV_CHECK in metadata:
        base = "argv list"
    elif _URL_CHECK in metadata:
        base = "URL"
    else:
        base = _bare_type_text(annotation, sections)
    constraints = _constraints(metadata)
    return f"{base} ({', '.join(constraints)})" if constraints else base


def _bare_type_text(annotation: Any, sections: dict[type[BaseModel], _Section]) -> str:
    if _is_model(annotation):
        section = sections[annotation]
        kind = _kind_of(annotation)
        label = f"`{kind}`" if kind and section.occurrences[0].kind else "object"
        return f"[{label}](#{section.anchor})"
    members = _union_members(annotation)
    if members is not None:
        shown = [_type_text(m, [], sections) for m in members if m is not type(None)]
        return " or ".join(shown)
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return f"list of {_type_text(item, [], sections)}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map of {_type_text(key, [], sections)} to {_type_text(value, [], sections)}"
    names: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        SecretStr: "string (secret)",
        dt.datetime: "date-time with time zone",
        AwareDatetime: "date-time with time zone",
    }
    if annotation in names:
        return names[annotation]
    raise TypeError(f"no words for the spec type {annotation!r}: teach spec_reference.py")


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "*required*"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "*not set*"
    if isinstance(value, BaseModel):
        return "its defaults" if value == type(value)() else _value_text(value, info)
    return _value_text(value, info)


def _value_text(value: Any, info: FieldInfo) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, float) and _DURATION_CHECK in info.metadata:
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict):
        if not value:
            return f"`{json.dumps(value)}`"
        return f"`{json.dumps(_jsonable(value), ensure_ascii=False)}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`" if abs(value) < 1e15 else f"`{value}`"
    return f"`{value}`"


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _cell(text: str) -> str:
    """Plain text for a markdown table cell: no raw HTML, no column breaks, no stray markup.
    Code spans are kept as written (markdown shows them literally; pipes in them do not split a
    table's cells)."""
    text = " ".join(text.split()).replace("``", "`")  # docstrings quote code as ``this``
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else _escape(part) for part in parts)


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    for char in "|*_[]":
        text = text.replace(char, "\\" + char)
    return text


def _description(info: FieldInfo, sections: dict[type[BaseModel], _Section]) -> str:
    if info.description:
        return _cell(info.description)
    bare, _ = _strip_annotated(info.annotation)
    members = _union_members(bare) or [bare]
    models = [m for m in (_strip_annotated(m)[0] for m in members) if _is_model(m)]
    if len(models) == 1 and models[0].__doc__:
        return _cell(_first_sentence(models[0].__doc__))
    return ""


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    match = re.match(r"(.+?[.:;])(\s|$)", text)
    return match.group(1).rstrip(":;.") + "." if match else text


def _section_text(section: _Section, sections: dict[type[BaseModel], _Section]) -> str:
    model = section.model
    first, *others = section.occurrences
    if model is ServiceSpec:
        title = "Top level"
        depth = 2
    else:
        title = first.text()
        depth = 3 if "." in first.path else 2
    lines = [f"{'#' * depth} {title} {{#{section.anchor}}}", ""]
    if model.__doc__:
        lines += [_cell(" ".join(model.__doc__.split())), ""]
    if others:
        lines += ["Also at " + ", ".join(o.text() for o in others) + ".", ""]
    lines += [
        f"Model: `{model.__module__}.{model.__qualname__}`",
        "",
        "| Key | Type | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in model.model_fields.items():
        type_text = _type_text(info.annotation, info.metadata, sections)
        lines.append(
            f"| `{name}` | {type_text} | {_default_text(info)} | {_description(info, sections)} |"
        )
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole reference page, from the models as they are now."""
    sections: dict[type[BaseModel], _Section] = {}
    _collect(ServiceSpec, "", None, sections)
    parts = [_INTRO]
    parts += [_section_text(section, sections) for section in sections.values()]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.spec_reference",
        description=f"Write {REFERENCE_PATH} from the service spec's models.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the committed file is out of date",
    )
    parser.add_argument("--output", type=Path, default=REFERENCE_PATH, help="%(default)s")
    args = parser.parse_args(argv)
    text = render()
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"{output} (committed)",
            f"{output} (from the models)",
            n=1,
        )
        sys.stdout.writelines(diff)
        print(f"\n{output} is out of date with the spec's models: run `{REGENERATE}`.")
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
