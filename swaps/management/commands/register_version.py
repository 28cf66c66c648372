"""`manage.py register_version MODEL VERSION ...`: record a new model version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from swaps import documents, registry
from swaps.management.base import DomainCommand, parse_json
from swaps.registry import BATCHING_FIELDS, SPEC_FIELDS

MISSING = "missing {names}: pass them as options or in --spec"
# What the model cannot tell: the rest, left out, is taken from a trial of it.
REQUIRED = ("runtime", "artifact")


class Command(DomainCommand):
    help = (
        "Register VERSION of MODEL (creating the model if new). Give the fields as options "
        "or as a VersionSpec JSON file (--spec; `python -m swaps.demo_models DIR` prints some)."
    )
    acts_as_user = True

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("version")
        parser.add_argument("--spec", type=Path, help="a JSON file with the fields below")
        parser.add_argument("--runtime", help="sklearn, onnx or python")
        parser.add_argument("--artifact", help="file path, or package.module:factory")
        # Left out, these are taken from a trial of the model (a python factory needs
        # --sample-input or --inputs).
        parser.add_argument("--sample-input", help="JSON, e.g. [[5.1, 3.5, 1.4, 0.2]]")
        parser.add_argument("--expected-output-shape", help="JSON, e.g. [-1]")
        parser.add_argument("--expected-output-dtype", help="a V2 datatype, e.g. INT64")
        parser.add_argument("--memory-limit-bytes", type=int)
        parser.add_argument("--inputs", help="JSON list of {name, datatype, shape}")
        parser.add_argument("--outputs", help="JSON list of {name, datatype, shape}")
        parser.add_argument("--max-batch-size", type=int, help="rows per batch (default: none)")
        parser.add_argument("--max-batch-delay-ms", type=float, help="a batch's longest wait")

    def run(self, **options: Any) -> tuple[Any, str]:
        fields = _from_file(options["spec"]) if options["spec"] else {}
        for name in SPEC_FIELDS:
            value = options.get(name)
            if value is None:
                continue
            if name in ("sample_input", "expected_output_shape", "inputs", "outputs"):
                value = parse_json(value, option="--" + name.replace("_", "-"))
            fields[name] = value
        fields.setdefault("inputs", [])
        fields.setdefault("outputs", [])
        for name in BATCHING_FIELDS:
            if options.get(name) is not None:
                fields[name] = options[name]
        missing = [name for name in REQUIRED if name not in fields]
        if missing:
            raise CommandError(
                MISSING.format(names=", ".join("--" + n.replace("_", "-") for n in missing))
            )
        version = registry.register_version(
            model=options["model"],
            version=options["version"],
            **fields,
            user=options["user"],
            via=options["via"],
        )
        text = f"registered {version.served_model.name} {version.version} ({version.runtime})"
        if version.taken_from_model:
            taken = ", ".join(
                f"{name} {json.dumps(getattr(version, name))}" for name in version.taken_from_model
            )
            text += f"; taken from the model: {taken}"
        return documents.version_document(version), text


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read --spec {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandError(f"--spec {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"--spec {path} must hold a JSON object")
    return {name: data[name] for name in (*SPEC_FIELDS, *BATCHING_FIELDS) if name in data}
