"""Registering model versions (and the served models they belong to).

A version record is immutable once registered: replicas may have loaded it, and
swap records point at it; one no longer wanted is retired, never deleted. Its artifact
is pinned by the sha256 taken here, which the record keeps and every replica checks the
file against before loading it (`engine/artifacts.py`). Registering a version of a
model that does not exist yet creates the model, which serves nothing until its first
deploy.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from swaps import audit, fleet_state, model_probe, permissions
from swaps.engine.artifacts import digest_of
from swaps.engine.errors import LoadError
from swaps.engine.spec import RUNTIMES, TensorSpec, VersionSpec
from swaps.engine.tensors import V2_TO_NUMPY
from swaps.models import NAME_HELP, NAME_PATTERN, ModelVersion, ServedModel, Swap
from swaps.refusals import Conflict, NotFound, Refused, invalid_fields

log = logging.getLogger(__name__)

UNKNOWN_MODEL = "model {model!r} does not exist"
UNKNOWN_VERSION = "model {model!r} has no version {version!r}"
ALREADY_RETIRED = "version {version!r} of model {model!r} is retired already"
NOT_RETIRED = "version {version!r} of model {model!r} is not retired"
RETIRING_ACTIVE = (
    "version {version!r} serves model {model!r}: swap to another version before retiring it"
)
RETIRING_IN_USE = (
    "an operation of model {model!r} under way starts from or goes to version {version!r}: "
    "retire it once that operation has ended"
)
ARTIFACT_NOT_ALLOWED = "not allowed: an artifact must be a file under {roots}"
# Runtimes whose artifact runs its own code when it loads, and what to call it.
CODE_RUNTIMES = {"python": "a python factory", "sklearn": "a joblib file (a pickle)"}
ALREADY_REGISTERED = "version {version!r} of model {model!r} is already registered"
PYTHON_NEEDS_SAMPLE = (
    "a python version needs a sample_input (or declared inputs): a factory's model cannot "
    "say what it takes"
)
NOT_PUBLISHED = (
    "version %s of model %s is registered but not yet published to the fleet (%s); "
    "the first swap to it publishes it"
)

_NAME = re.compile(NAME_PATTERN)


def get_model(name: str) -> ServedModel:
    try:
        return ServedModel.objects.select_related("active_version").get(name=name)
    except ServedModel.DoesNotExist:
        raise NotFound(UNKNOWN_MODEL.format(model=name)) from None


# What a version record holds besides its model and name: a VersionSpec's fields.
SPEC_FIELDS = (
    "runtime",
    "artifact",
    "sample_input",
    "expected_output_shape",
    "expected_output_dtype",
    "memory_limit_bytes",
    "inputs",
    "outputs",
)
# Optional: a version registered without them is not batched.
BATCHING_FIELDS = ("max_batch_size", "max_batch_delay_ms")
VERSION_FIELDS = ("version", *SPEC_FIELDS, *BATCHING_FIELDS)
MAX_BATCH_DELAY_MS = 1000


def all_models() -> list[ServedModel]:
    return list(ServedModel.objects.select_related("active_version"))


def register_version(
    *,
    model: str,
    version: Any,
    runtime: Any,
    artifact: Any,
    sample_input: Any = None,
    expected_output_shape: Any = None,
    expected_output_dtype: Any = None,
    memory_limit_bytes: Any = None,
    inputs: Any = (),
    outputs: Any = (),
    max_batch_size: Any = None,
    max_batch_delay_ms: Any = None,
    user: permissions.User,
    via: str,
) -> ModelVersion:
    """Record a new version (creating its model if new) and publish it to the fleet.

    Every field is checked, types included, and every fault named at once. A field left
    out (None) that the model can tell is taken from a sandboxed trial of it
    (`model_probe`) and listed in the record's `taken_from_model`. Publishing is best
    effort: a fleet that is down does not lose the registration, as each swap
    publishes the versions it needs first.
    """
    with audit.attempt(
        actor=user,
        via=via,
        action=audit.REGISTER_VERSION,
        model=model,
        to_version=version if isinstance(version, str) else "",
    ) as record:
        permissions.require(user, permissions.REGISTER_VERSION, action="register a version")
        fields = check_version_fields(
            model=model,
            version=version,
            runtime=runtime,
            artifact=artifact,
            sample_input=sample_input,
            expected_output_shape=expected_output_shape,
            expected_output_dtype=expected_output_dtype,
            memory_limit_bytes=memory_limit_bytes,
            inputs=inputs,
            outputs=outputs,
            max_batch_size=max_batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
        )
        _require_code_right(user, runtime=fields["runtime"], artifact=fields["artifact"])
        # Taken before the transaction: hashing a large file must not hold it open.
        digest = _artifact_digest(runtime=fields["runtime"], artifact=fields["artifact"])
        # After the code right: trying the model runs its code (in a sandbox), on the
        # bytes just hashed.
        fields, taken = _taken_from_model(model, fields, digest)
        try:
            with transaction.atomic():
                served, _ = ServedModel.objects.get_or_create(name=model)
                registered = ModelVersion.objects.create(
                    served_model=served,
                    registered_by=_user_or_none(user),
                    artifact_digest=digest,
                    taken_from_model=taken,
                    **fields,
                )
                record.accepted(
                    runtime=runtime,
                    artifact=artifact,
                    artifact_digest=digest,
                    taken_from_model=taken,
                )
        except IntegrityError:
            raise Conflict(ALREADY_REGISTERED.format(version=version, model=model)) from None
    _publish(registered)
    return registered


def register_spec(*, spec: VersionSpec, user: permissions.User, via: str) -> ModelVersion:
    """Register a version given as an engine `VersionSpec` (demo models, benchmarks)."""
    data = spec.as_dict()
    return register_version(
        model=spec.model_id,
        version=spec.version,
        **{name: data[name] for name in (*SPEC_FIELDS, *BATCHING_FIELDS)},
        user=user,
        via=via,
    )


def retire_version(
    *, model: str, version: Any, user: permissions.User, via: str, restore: bool = False
) -> ModelVersion:
    """Retire a version (no target of a swap or rollback from now on, and in no form),
    or `restore` one retired; its records and history stay either way.

    The version serving the model, or one an operation under way starts from or goes
    to, is refused: retire it once the model serves another.
    """
    action = audit.RESTORE_VERSION if restore else audit.RETIRE_VERSION
    with audit.attempt(
        actor=user,
        via=via,
        action=action,
        model=model,
        to_version=version if isinstance(version, str) else "",
    ) as record:
        verb = "restore" if restore else "retire"
        permissions.require(user, permissions.REGISTER_VERSION, action=f"{verb} a version")
        served = get_model(model)
        with transaction.atomic():
            found = served.versions.select_for_update().filter(version=version).first()
            if not isinstance(version, str) or found is None:
                raise NotFound(UNKNOWN_VERSION.format(model=model, version=version))
            if restore and found.retired_at is None:
                raise Conflict(NOT_RETIRED.format(model=model, version=version))
            if not restore:
                _check_retirable(served, found)
            found.retired_at = None if restore else timezone.now()
            found.save(update_fields=["retired_at"])
            record.accepted()
    return found


def _check_retirable(served: ServedModel, version: ModelVersion) -> None:
    if version.retired_at is not None:
        raise Conflict(ALREADY_RETIRED.format(model=served.name, version=version.version))
    if served.active_version_id == version.pk:
        raise Conflict(RETIRING_ACTIVE.format(model=served.name, version=version.version))
    running = served.swaps.filter(state__in=Swap.RUNNING).filter(
        Q(from_version=version) | Q(to_version=version)
    )
    if running.exists():
        raise Conflict(RETIRING_IN_USE.format(model=served.name, version=version.version))


def set_rollback_approval(
    *, model: ServedModel, required: bool, user: permissions.User, via: str
) -> ServedModel:
    """Turn approval-gated rollbacks on or off for a model.

    It takes a permission of its own: operators and approvers both request rollbacks,
    and the gate is no gate if the people it holds back may open it.
    """
    with audit.attempt(
        actor=user,
        via=via,
        action="set_rollback_approval",
        model=model.name,
        details={"required": required},
    ) as record:
        permissions.require(
            user,
            permissions.SET_ROLLBACK_APPROVAL,
            action="change whether a model's rollbacks need approval",
        )
        with transaction.atomic():
            ServedModel.objects.filter(pk=model.pk).update(rollback_requires_approval=required)
            record.accepted()
    model.refresh_from_db()
    return model


def _taken_from_model(
    model: str, fields: dict[str, Any], digest: str
) -> tuple[dict[str, Any], list[str]]:
    if not model_probe.missing_fields(fields):
        return fields, []
    try:
        described, taken = model_probe.take_from_model({"model": model, **fields}, digest=digest)
    except LoadError as exc:
        raise invalid_fields({"artifact": exc.message}) from None
    described.pop("model")
    return described, taken


def _publish(version: ModelVersion) -> None:
    spec = version.as_spec()

    async def publish(engine: fleet_state.Engine) -> None:
        await engine.publish_spec(spec)

    try:
        fleet_state.run(publish)
    except Refused as exc:
        log.warning(NOT_PUBLISHED, spec.version, spec.model_id, exc.message)


def _user_or_none(user: permissions.User):
    return user if user is not None and user.is_authenticated else None


def _file_artifact_problem(artifact: str) -> str | None:
    """Why a file artifact cannot be what replicas load, as far as this host can tell.

    The web process sees the artifacts where the replicas do (a shared volume: see
    compose.yaml), so a path missing here is missing there. A python factory is not
    imported here: a model's code runs in replicas, not in the control plane.
    """
    if "://" in artifact:
        scheme = artifact.split("://", 1)[0]
        return f"{scheme}:// URIs are not supported: give the path of a file every replica can read"
    path = Path(artifact)
    if not path.is_absolute():
        return "must be an absolute path: replicas do not run in this process's directory"
    # Before anything that looks at the file: outside the roots, whether a path exists
    # is nobody's business (/proc/self/environ, ../../etc/passwd, a symlink out).
    if not _under_artifact_roots(artifact):
        return ARTIFACT_NOT_ALLOWED.format(roots=", ".join(settings.HOTSWAP_ARTIFACT_ROOTS))
    if not path.is_file():
        return f"no file at {artifact}: it must exist where the replicas read it"
    if not os.access(path, os.R_OK):
        return f"{artifact} cannot be read"
    return None


def _artifact_digest(*, runtime: str, artifact: str) -> str:
    """What the version is pinned by: the checked file's digest ("" for a python factory,
    which is code to import, not a file to hash)."""
    if runtime == "python":
        return ""
    try:
        return digest_of(artifact)
    except (OSError, ValueError) as exc:  # gone or changed since it was checked
        raise invalid_fields({"artifact": f"cannot be read ({exc})"}) from None


def _under_artifact_roots(artifact: str) -> bool:
    real = os.path.realpath(artifact)  # symlinks resolved, ".." collapsed
    return any(os.path.commonpath([real, root]) == root for root in settings.HOTSWAP_ARTIFACT_ROOTS)


def _require_code_right(user: permissions.User, *, runtime: str, artifact: str) -> None:
    """A version whose artifact is code needs swaps.register_code, unless it is a python
    factory from a module the environment trusts (HOTSWAP_CODE_MODULES)."""
    if runtime not in CODE_RUNTIMES:
        return
    module = artifact.partition(":")[0]
    trusted = (prefix.rstrip(".") for prefix in settings.HOTSWAP_CODE_MODULES)
    # A package and what is in it, never a lookalike name ("acme_models_evil").
    if runtime == "python" and any(
        module == package or module.startswith(package + ".") for package in trusted
    ):
        return
    permissions.require(
        user, permissions.REGISTER_CODE, action=f"register {CODE_RUNTIMES[runtime]}"
    )


def check_version_fields(**given: Any) -> dict[str, Any]:
    """The model fields of a version, or one refusal naming every bad one."""
    problems: dict[str, str] = {}
    for name in ("model", "version"):
        value = given[name]
        if not isinstance(value, str) or not _NAME.match(value):
            problems[name] = f"must be {NAME_HELP}"
    # Checked as strings first: a list or object is not hashable, and not a name either.
    if not isinstance(given["runtime"], str) or given["runtime"] not in RUNTIMES:
        problems["runtime"] = f"must be one of {', '.join(RUNTIMES)}"
    artifact = given["artifact"]
    if not isinstance(artifact, str) or not artifact.strip() or len(artifact) > 1024:
        problems["artifact"] = "must be a file path or package.module:factory (1-1024 characters)"
    elif given["runtime"] == "python":
        if ":" not in artifact:
            problems["artifact"] = "a python version's artifact is package.module:factory"
    elif (problem := _file_artifact_problem(artifact)) is not None:
        problems["artifact"] = problem
    # None: left out, to be taken from the model (swaps/model_probe.py).
    sample = given.get("sample_input")
    if sample is not None and (
        not isinstance(sample, list) or not sample or not _numeric_rows(sample)
    ):
        problems["sample_input"] = "must be a non-empty list of rows of numbers, e.g. [[1.0, 2.0]]"
    shape = given.get("expected_output_shape")
    if shape is not None and not (
        isinstance(shape, list)
        and shape
        and all(type(d) is int and (d > 0 or d == -1) for d in shape)
    ):
        problems["expected_output_shape"] = "must be a list of sizes (-1 for any), e.g. [-1]"
    dtype = given.get("expected_output_dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in V2_TO_NUMPY):
        problems["expected_output_dtype"] = "must be a V2 datatype, e.g. INT64 or FP32"
    limit = given.get("memory_limit_bytes")
    if limit is not None and (type(limit) is not int or limit <= 0):
        problems["memory_limit_bytes"] = "must be a whole number of bytes above 0"
    tensors = {}
    for name in ("inputs", "outputs"):
        try:
            tensors[name] = [
                TensorSpec.from_dict(t).as_dict() for t in _tensor_list(given[name] or [])
            ]
        except (TypeError, KeyError, ValueError):
            problems[name] = 'must be a list of {"name", "datatype", "shape"} objects'
    batch_size = given.get("max_batch_size") or 0
    if type(batch_size) is not int or batch_size < 0:
        problems["max_batch_size"] = "must be a whole number of rows (0 or 1: no batching)"
    delay = given.get("max_batch_delay_ms") or 0
    if type(delay) not in (int, float) or not 0 <= delay <= MAX_BATCH_DELAY_MS:
        problems["max_batch_delay_ms"] = f"must be milliseconds from 0 to {MAX_BATCH_DELAY_MS}"
    if given["runtime"] == "python" and sample is None and not tensors.get("inputs"):
        problems["sample_input"] = PYTHON_NEEDS_SAMPLE
    if problems:
        raise invalid_fields(problems)
    if given["runtime"] != "python":
        # What replicas load is the file checked here, not a symlink someone may repoint.
        artifact = os.path.realpath(artifact)
    return {
        "version": given["version"],
        "runtime": given["runtime"],
        "artifact": artifact,
        "sample_input": sample,
        "expected_output_shape": shape,
        "expected_output_dtype": given["expected_output_dtype"],
        "memory_limit_bytes": limit,
        **tensors,
        "max_batch_size": batch_size,
        "max_batch_delay_ms": float(delay),
    }


def _numeric_rows(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_numeric_rows(v) for v in value)
    return type(value) in (int, float) and math.isfinite(value)


def _tensor_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        raise TypeError("not a list")
    for tensor in value:
        if (
            not isinstance(tensor, dict)
            or not isinstance(tensor.get("name"), str)
            or tensor.get("datatype") not in V2_TO_NUMPY
            or not isinstance(tensor.get("shape"), list)
            or not all(type(d) is int for d in tensor["shape"])
        ):
            raise ValueError("not a tensor")
    return list(value)
