"""A lake that refuses a write (a full disk, a read-only mount, a bucket denying PUTs) as one line.

delta-rs reports such failures as a `DeltaError` of several lines (its Rust error's debug form)
or, on some paths, as a Rust panic (pyo3's `PanicException`, a `BaseException` that a plain
`except Exception` lets through and that ends the process). Both, and the `OSError` of our own
file writes and botocore's errors, become `LakeUnwritable`: what happened, where, what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from scanfill.errors import ScanfillError


class LakeUnwritable(ScanfillError):
    """The lake could not be written: nothing of the commit (or publish) in progress is visible to
    its readers, and the database's bookkeeping says what is still to do."""


def is_lake_failure(exc: BaseException) -> bool:
    """An error of writing to the lake (not of the program): storage, delta-rs, or its panics."""
    from deltalake.exceptions import DeltaError

    kind = type(exc)
    return (isinstance(exc, (OSError, DeltaError)) or kind.__name__ == "PanicException"
            or kind.__module__.startswith(("botocore", "boto3", "s3transfer")))  # fmt: skip


def reason(exc: BaseException) -> str:
    """The operating system's words when there are some (`Read-only file system`, `No space left on
    device`), else the error's first line."""
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    text = str(exc)
    found = re.search(r'message: "([^"]+)"', text)
    if found:
        return found.group(1)
    s3 = re.search(r"<Code>([^<]+)</Code>\s*<Message>([^<]+)</Message>", text)  # an S3 server's refusal
    if s3:
        return f"{s3.group(1)}: {s3.group(2)}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def writing(lake: Any, doing: str) -> Iterator[None]:
    """Run a write to `lake` (a `Lake`); a storage failure becomes one `LakeUnwritable` line."""
    try:
        yield
    except LakeUnwritable:
        raise
    except BaseException as exc:
        if not is_lake_failure(exc):
            raise
        raise LakeUnwritable(
            f"the lake at {lake.shown} cannot be written ({reason(exc)}) while {doing}: nothing of it is visible to "
            "readers and nothing is lost; free space or make it writable (a read-only mount; a bucket that is "
            "missing or denies writes)"
        ) from exc
