"""Google Cloud Storage plumbing for snapshots: URIs, the client, checksums, guarded writes.

Every write here carries a generation precondition (`if_generation_match`): 0 means "only if
the object does not exist", G means "only if it is still at generation G". That makes each
write idempotent, so the library may retry it on 503s and dropped connections. The one case
that needs care is a retry whose first attempt *did* land but whose reply was lost: the retry
then gets 412 from our own write. `put_bytes`/`put_file` recognise it by reading the object
back and comparing crc32c and size with what we sent.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from introspectd.errors import BadInput, Transient, UploadError, one_line

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    generation: int
    crc32c: str  # base64 of the big-endian CRC32C, as GCS reports it
    size: int


def transient_reason(exc: BaseException) -> str | None:
    """One line when `exc` is an outage that a later attempt may not meet (connection refused
    or reset, timeouts, 429, 5xx; also the client's own retries running out), else None."""
    import requests
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.RetryError):  # the client's retries (all on transient errors) ran out
        cause = exc.cause or exc.__cause__
        return one_line(cause if cause is not None else exc)
    transient = (
        gexc.ServerError,
        gexc.TooManyRequests,
        requests.ConnectionError,
        requests.Timeout,
        auth_exc.TransportError,
        ConnectionError,
        TimeoutError,
    )
    return one_line(exc) if isinstance(exc, transient) else None


NO_CREDENTIALS = (
    "no Google Cloud credentials (run `gcloud auth application-default login`, "
    "or set GOOGLE_APPLICATION_CREDENTIALS)"
)


@contextlib.contextmanager
def gcs_errors(where: str, outage: str = "") -> Iterator[None]:
    """The one translation of google-cloud errors into introspectd's (as httpx maps httpcore's
    where they arise): what only the user can fix — no such bucket, no permission, credentials
    refused, a request GCS rejects — is one BadInput line about `where` (a gs:// URI; exit 2;
    missing credentials are `make_client`'s); an outage is Transient (exit 75, so Cloud Batch
    retries), said as `outage` (default "cannot reach WHERE"). Our own errors and anything
    else pass through unchanged."""
    from google.auth import exceptions as auth_exc

    try:
        yield
    except gexc.NotFound:  # objects are looked up without raising: a 404 here is the bucket
        raise BadInput(f"{where}: bucket gs://{parse_gcs_uri(where)[0]} does not exist") from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise BadInput(f"{where}: permission denied ({_server_says(exc)})") from None
    except auth_exc.RefreshError as exc:
        raise BadInput(f"{where}: Google Cloud credentials refused ({one_line(exc)})") from None
    except gexc.BadRequest as exc:
        raise BadInput(f"{where}: GCS rejected the request ({_server_says(exc)})") from None
    except Exception as exc:
        reason = transient_reason(exc)
        if reason is None:
            raise
        raise Transient(
            f"{outage or f'cannot reach {where}'} ({reason}); nothing was lost — run the same "
            "command again once GCS answers"
        ) from None


def _server_says(exc: gexc.GoogleAPICallError) -> str:
    """GCS's own explanation (which account lacks which permission), without the request URL."""
    detail = exc.errors[0] if exc.errors else None
    if isinstance(detail, dict) and detail.get("message"):
        return " ".join(str(detail["message"]).split())[:300]
    return one_line(exc)


def probe(bucket: storage.Bucket, prefix: str, retry: Retry, timeout: float) -> None:
    """List at most one object under `prefix`: NotFound when the bucket does not exist, which a
    read of one object cannot tell (GCS answers 404 for a missing object and bucket alike)."""
    blobs = bucket.client.list_blobs(
        bucket, prefix=prefix, max_results=1, retry=retry, timeout=timeout
    )
    list(blobs)


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix may be empty."""
    if not uri.startswith("gs://"):
        raise BadInput(f"not a GCS URI (want gs://bucket/prefix): {uri!r}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket or "//" in prefix.strip("/"):
        raise BadInput(f"bad GCS URI (want gs://bucket/prefix): {uri!r}")
    return bucket, prefix.strip("/")


def make_client(where: str = "Google Cloud Storage") -> storage.Client:
    """A storage client; anonymous with a dummy project when `STORAGE_EMULATOR_HOST` is set.
    No credentials is one BadInput line about `where`, raised here where google.auth finds out.

    google-cloud-storage already switches to anonymous credentials for the emulator; we pass
    them (and a project) explicitly so nothing ever probes for ADC or the metadata server.
    """
    from google.auth.exceptions import DefaultCredentialsError

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "test"
        return storage.Client(project=project, credentials=AnonymousCredentials())
    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise BadInput(f"{where}: {NO_CREDENTIALS}") from None


def make_retry(timeout_s: float, initial_s: float = 1.0, maximum_s: float = 16.0) -> Retry:
    """The library's transient-error predicate (429/5xx/connection errors), bounded in time."""
    return DEFAULT_RETRY.with_timeout(timeout_s).with_delay(
        initial=initial_s, maximum=maximum_s, multiplier=2.0
    )


def crc32c_of_bytes(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def crc32c_of_file(path: Path) -> str:
    checksum = google_crc32c.Checksum()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


def _info(blob: storage.Blob) -> ObjectInfo:
    return ObjectInfo(blob.name, int(blob.generation), str(blob.crc32c), int(blob.size))


def stat(bucket: storage.Bucket, name: str, retry: Retry, timeout: float) -> ObjectInfo | None:
    blob = bucket.get_blob(name, retry=retry, timeout=timeout)
    return None if blob is None else _info(blob)


def _own_write(
    bucket: storage.Bucket, name: str, crc: str, size: int, retry: Retry, timeout: float
) -> ObjectInfo | None:
    """After a 412: the object as it is now, if it holds exactly what we tried to write."""
    current = stat(bucket, name, retry, timeout)
    if current is not None and current.crc32c == crc and current.size == size:
        return current
    return None


def put_bytes(
    bucket: storage.Bucket,
    name: str,
    data: bytes,
    *,
    if_generation_match: int,
    retry: Retry,
    timeout: float,
    content_type: str = "application/json",
) -> ObjectInfo:
    """Write `data` only if `name` is at `if_generation_match`; raises PreconditionFailed if not."""
    blob = bucket.blob(name)
    crc = crc32c_of_bytes(data)
    try:
        blob.upload_from_string(
            data,
            content_type=content_type,
            checksum="crc32c",
            if_generation_match=if_generation_match,
            retry=retry,
            timeout=timeout,
        )
    except gexc.PreconditionFailed:
        mine = _own_write(bucket, name, crc, len(data), retry, timeout)
        if mine is None:
            raise
        return mine
    return _info(blob)


def put_file(
    bucket: storage.Bucket,
    name: str,
    path: Path,
    crc: str,
    size: int,
    *,
    if_generation_match: int,
    retry: Retry,
    timeout: float,
) -> ObjectInfo:
    """Upload `path` (whose crc32c/size the caller computed) under the same rules as put_bytes."""
    blob = bucket.blob(name)
    try:
        blob.upload_from_filename(
            str(path),
            content_type="application/octet-stream",
            checksum="crc32c",
            if_generation_match=if_generation_match,
            retry=retry,
            timeout=timeout,
        )
    except gexc.PreconditionFailed:
        mine = _own_write(bucket, name, crc, size, retry, timeout)
        if mine is None:
            raise
        return mine
    info = _info(blob)
    if info.crc32c != crc or info.size != size:
        # The file changed under us between hashing and uploading: a caller bug, not a blip.
        raise UploadError(f"gs://{bucket.name}/{name}: uploaded bytes differ from the staged file")
    return info


def get_bytes(
    bucket: storage.Bucket, name: str, retry: Retry, timeout: float
) -> tuple[bytes, int] | None:
    """(content, generation) of `name`, or None when it does not exist."""
    blob = bucket.blob(name)
    try:
        data = blob.download_as_bytes(retry=retry, timeout=timeout)
    except gexc.NotFound:
        return None
    return data, int(blob.generation)


def download(bucket: storage.Bucket, name: str, dest: Path, retry: Retry, timeout: float) -> bool:
    """Download `name` into `dest`; False when the object does not exist."""
    try:
        bucket.blob(name).download_to_filename(str(dest), retry=retry, timeout=timeout)
    except gexc.NotFound:
        dest.unlink(missing_ok=True)
        return False
    return True


def delete_quietly(
    bucket: storage.Bucket, name: str, generation: int, retry: Retry, timeout: float
) -> None:
    """Best-effort delete of one generation (garbage collection must never fail an upload)."""
    with contextlib.suppress(gexc.NotFound, gexc.PreconditionFailed):
        bucket.blob(name).delete(if_generation_match=generation, retry=retry, timeout=timeout)


def list_objects(
    bucket: storage.Bucket, prefix: str, retry: Retry, timeout: float
) -> list[ObjectInfo]:
    blobs = bucket.client.list_blobs(bucket, prefix=prefix, retry=retry, timeout=timeout)
    return [_info(b) for b in blobs]


def read_plan_text(uri: str) -> str:
    """A plan file's text from GCS (plans travel with Cloud Batch jobs); one line on failure."""
    bucket, name = parse_gcs_uri(uri)
    try:
        with gcs_errors(uri, outage=f"{uri}: cannot read plan file now"):
            try:
                # Retries as bounded as the snapshots' (the library's default goes on for 120 s).
                blob = make_client(f"{uri}: cannot read plan file").bucket(bucket).blob(name)
                return str(blob.download_as_text(retry=make_retry(15.0), timeout=20.0))
            except gexc.NotFound:  # the object or its bucket: both mean "no such plan"
                raise BadInput(f"{uri}: plan file not found") from None
    except gexc.GoogleAPIError as exc:  # neither the user's to fix nor an outage
        raise BadInput(f"{uri}: cannot read plan file ({type(exc).__name__})") from None
