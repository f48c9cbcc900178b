"""Run directories on object storage (`s3://bucket/path`, `gs://...`) as well as local folders.

A sweep's `--run-dir` may be a URI. Tune then writes the trials there itself (the URI is its
`storage_path`, reached through pyarrow's filesystems): results, checkpoints and its own
experiment state. The few files marlscale reads and writes itself (sweep.yaml, the spec
fingerprint, provenance.json, results.csv, trials.csv, report/) go through a local **mirror**:
`fetch` copies a run directory's small files, everything but checkpoints and W&B run folders,
into a local folder, the usual code runs on it, and `push` uploads what it wrote.

Credentials and endpoints come from the environment, as pyarrow reads them:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and AWS_ENDPOINT_URL for an
S3-compatible server (MinIO, Ceph, moto). On a cluster every node needs them, since trials
write their checkpoints from wherever they run.

Every S3 request marlscale makes is bounded: `TIMEOUT_S` to connect and without a byte
received, and `ATTEMPTS` tries (the first check of a run directory, before Ray starts, one),
so an endpoint that accepts connections and never answers fails with one line naming the URI
and the endpoint, instead of hanging (the AWS SDK's defaults retry for minutes).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

TIMEOUT_S = 10.0
ATTEMPTS = 3
SKIP = re.compile(r"(^|/)(checkpoint_\d+|wandb)(/|$)")  # large, and not read by marlscale
ALLOWED = ("allowed: a local folder, or an object-store URI such as s3://BUCKET/PATH (with "
           "credentials, region and for S3-compatible servers AWS_ENDPOINT_URL in the "
           "environment)")


def is_uri(path: str | os.PathLike | None) -> bool:
    return path is not None and "://" in str(path)


def filesystem(uri: str, name: str = "--run-dir", attempts: int | None = None):
    """(pyarrow filesystem, path inside it) of a URI; a clear error when pyarrow cannot use
    it (unknown scheme, no bucket). S3's requests time out (`TIMEOUT_S`, `attempts` tries)."""
    from pyarrow import fs

    try:
        filesystem_, path = fs.FileSystem.from_uri(uri.rstrip("/"))
    except (ValueError, OSError) as error:
        raise ValueError(f"{name} {uri!r} is invalid ({error}); {ALLOWED}") from None
    if isinstance(filesystem_, fs.S3FileSystem):  # rebuilt with the same options, bounded
        rebuild, (options,) = filesystem_.__reduce__()
        filesystem_ = rebuild({**options, "connect_timeout": TIMEOUT_S,
                               "request_timeout": TIMEOUT_S,
                               "retry_strategy": fs.AwsStandardS3RetryStrategy(
                                   max_attempts=attempts or ATTEMPTS)})
    return filesystem_, path


def _unreachable(uri: str, name: str, error: OSError) -> ValueError:
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    where = f"the endpoint {endpoint} (AWS_ENDPOINT_URL)" if endpoint else "the object store"
    return ValueError(f"{name} {uri!r} cannot be reached ({error}); check that {where} "
                      f"answers within {TIMEOUT_S:g} s and the credentials; {ALLOWED}")


def split(uri: str) -> tuple[str, str]:
    """(parent URI, last name): Tune's storage_path and experiment name of a run directory."""
    uri = uri.rstrip("/")
    parent, name = uri.rsplit("/", 1)
    if not name or parent.endswith(":/"):
        raise ValueError(f"--run-dir {uri!r} is invalid: it names a bucket, not a folder in "
                         f"one; {ALLOWED}")
    return parent, name


def _info(uri: str, name: str):
    filesystem_, path = filesystem(uri, name, attempts=1)  # the first request: one try
    try:
        info = filesystem_.get_file_info(path)
    except OSError as error:
        raise _unreachable(uri, name, error) from None
    return filesystem(uri, name)[0], path, info


def check_new(uri: str, name: str = "--run-dir", hint: str = "") -> None:
    """A new run writes into a URI that holds nothing yet, in a bucket that exists (checked
    before Ray starts; nothing is written)."""
    from pyarrow import fs

    split(uri)
    filesystem_, path, info = _info(uri, name)
    if info.type != fs.FileType.NotFound:
        selector = fs.FileSelector(path, allow_not_found=True)
        if info.type != fs.FileType.Directory or filesystem_.get_file_info(selector):
            raise ValueError(f"{name} {uri!r} is invalid; allowed: a new or empty folder{hint}")
    bucket = path.split("/", 1)[0]
    try:
        found = filesystem_.get_file_info(bucket).type != fs.FileType.NotFound
    except OSError as error:
        raise _unreachable(uri, name, error) from None
    if not found:
        raise ValueError(f"{name} {uri!r} is invalid: bucket {bucket!r} does not exist; "
                         f"allowed: a folder in an existing bucket")


def fetch(uri: str, local: str | os.PathLike, name: str = "RUN_DIR") -> Path:
    """Copy the run directory's small files (not checkpoints or W&B runs) into `local`."""
    from pyarrow import fs

    filesystem_, root, info = _info(uri, name)
    if info.type != fs.FileType.Directory:
        raise ValueError(f"{name} {uri!r} is invalid: nothing is there; allowed: the run "
                         "directory of a sweep")
    local = Path(local)
    for entry in filesystem_.get_file_info(fs.FileSelector(root, recursive=True)):
        relative = posixpath.relpath(entry.path, root)
        if entry.type != fs.FileType.File or SKIP.search(relative):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem_.open_input_stream(entry.path) as source:
            target.write_bytes(source.read())
    return local


def push(local: str | os.PathLike, uri: str, names: Iterable[str]) -> None:
    """Upload `names` (files or folders under `local`) to the same places under `uri`."""
    filesystem_, root = filesystem(uri)
    local = Path(local)
    for name in names:
        source = local / name
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                         if p.is_file())
        for file in files:
            target = posixpath.join(root, file.relative_to(local).as_posix())
            filesystem_.create_dir(posixpath.dirname(target), recursive=True)
            with filesystem_.open_output_stream(target) as sink:
                sink.write(file.read_bytes())
