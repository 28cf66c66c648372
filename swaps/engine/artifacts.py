"""What an artifact's bytes are: the sha256 digest a version is pinned by.

Registration records `digest_of(artifact)` with the version; it travels to the replicas
in the sealed spec (`VersionSpec.artifact_digest`), and the process that loads the
version checks the file against it first (`check_digest`, called by `runtimes.load`, in
the trial's child and again in the replica). A file changed after registration then
fails the load with both digests named, instead of being served without a word.

A digest is "sha256:<64 hex digits>":

- of a file, the sha256 of its bytes (streamed: an artifact may be larger than memory);
- of a directory, the sha256 of its manifest: one line per file below it, sorted by
  relative path, `<sha256 hex> <size> <path>\\n`, the path relative to the directory
  with "/" between its parts, written as a JSON string (so a name holding a space, a
  newline or undecodable bytes stays one unambiguous line). Renaming, adding, removing
  or changing any file changes it; the order the file system lists them in does not.
  Empty directories are not part of it: a runtime reads files.

Symlinks inside a directory are refused, not followed: the artifact-roots check
(`registry._under_artifact_roots`) sees only the top path, so a link inside could
pull in any file the process can read, and a link that is followed pins where it
points today rather than the tree that was registered. The top path itself is read
wherever it leads; registration records it resolved.

Nothing here knows where the bytes came from: a fetcher that copies a remote artifact
to a local path checks that copy with the same two functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from .errors import LoadError
from .spec import VersionSpec

ALGORITHM = "sha256"
PREFIX = ALGORITHM + ":"
DIGEST_LENGTH = len(PREFIX) + 64
DIGEST_MISMATCH = (
    "version {version!r} of model {model_id!r} is not the artifact it was registered "
    "with: {artifact} has digest {actual}, expected {expected} (the file changed after "
    "registration; register the new file as a new version)"
)
LINK_REFUSED = "{path} is a symlink: an artifact directory must hold its own files"
NOT_A_FILE = "{path} is neither a regular file nor a directory"


def digest_of(path: str | os.PathLike[str]) -> str:
    """The digest of a file or a directory (see the module docstring).

    Raises OSError if it cannot be read, ValueError for a symlink inside a directory or
    anything that is neither a regular file nor a directory (a FIFO would never end).
    """
    path = Path(path)
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return PREFIX + _file_sha256(path)[0]
    if stat.S_ISDIR(mode):
        return PREFIX + hashlib.sha256(_manifest(path)).hexdigest()
    raise ValueError(NOT_A_FILE.format(path=path))


def check_digest(spec: VersionSpec, path: str | os.PathLike[str]) -> None:
    """Raise LoadError naming the version and both digests unless `path` is what `spec`
    was registered with. A spec without a digest (a python factory, or a version
    registered before digests whose file was gone then) is not checked."""
    if not spec.artifact_digest:
        return
    actual = digest_of(path)
    if actual != spec.artifact_digest:
        raise LoadError(
            DIGEST_MISMATCH.format(
                version=spec.version,
                model_id=spec.model_id,
                artifact=spec.artifact,
                expected=spec.artifact_digest,
                actual=actual,
            )
        )


def _file_sha256(path: Path) -> tuple[str, int]:
    """The file's sha256 in hex, and its size, both of the file opened once."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        return hashlib.file_digest(file, ALGORITHM).hexdigest(), size


def _manifest(root: Path) -> bytes:
    lines = []
    for name, file in sorted(_files(root, prefix="")):
        sha256, size = _file_sha256(file)
        lines.append(f"{sha256} {size} {json.dumps(name)}\n")
    return "".join(lines).encode()


def _files(directory: Path, *, prefix: str):
    """(relative name, path) of every regular file below `directory`, links refused."""
    with os.scandir(directory) as entries:
        for entry in entries:
            name, path = prefix + entry.name, Path(entry.path)
            if entry.is_symlink():
                raise ValueError(LINK_REFUSED.format(path=path))
            if entry.is_dir(follow_symlinks=False):
                yield from _files(path, prefix=name + "/")
            elif entry.is_file(follow_symlinks=False):
                yield name, path
            else:
                raise ValueError(NOT_A_FILE.format(path=path))
