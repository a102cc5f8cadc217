"""Every error scanfill raises on purpose, in one tree. The CLI turns exactly these into a
one-line message and a non-zero exit; anything else is a bug and keeps its traceback.

    ScanfillError
    ├── ConfigError          a setting the user must fix (DSN, URLs, options)      terminal
    ├── DatabaseUnavailable  the server stayed down for the whole --db-retry budget  terminal (after retrying)
    ├── SchemaError          tables missing, too old or too new: run `scanfill init` terminal
    ├── Refused              an operation that would be unsafe now (prepare during a load)  terminal
    ├── ScanError            Scan could not answer after every retry                transient
    │   ├── ScanHTTPError    ... with this status and body
    │   └── UnknownMigration a migration the user named that no scan holds         terminal
    ├── UnloggedLost         the server restarted while tables were UNLOGGED: rerun   terminal
    ├── MalformedPage        a page that breaks Scan's contract: nothing of it is stored   terminal for that slice
    └── Fenced               this worker lost its lease: another one carries on    expected

`transient` errors are retried where they occur (backoff, failover, the next run); `terminal`
ones stop the operation with a message that says what to do.
"""

from __future__ import annotations


class ScanfillError(Exception):
    """Base of every error scanfill raises on purpose."""

    transient = False


class ConfigError(ScanfillError):
    """A setting the user must fix; the message says which and how."""


class DatabaseUnavailable(ScanfillError):
    """The database stayed unreachable for the whole retry budget (a restart is ridden out)."""


class SchemaError(ScanfillError):
    """scanfill's tables are missing, older or newer than this release expects."""


class Refused(ScanfillError):
    """An operation refused because it would be unsafe now; the message says why and how to force it."""


class ScanError(ScanfillError):
    """Scan could not answer after every retry; says what was asked and what came back."""

    transient = True


class ScanHTTPError(ScanError):
    def __init__(self, status: int, url: str, body: bytes) -> None:
        self.status = status
        super().__init__(f"HTTP {status} from {url}: {body[:300].decode('utf-8', 'replace')}")


class UnknownMigration(ScanError):
    """A migration the user asked for by id that no scan holds (a typo, or the wrong network)."""

    transient = False


class UnloggedLost(ScanfillError):
    """The server restarted uncleanly while the ledger tables were UNLOGGED and emptied them; a
    loader that rode out the outage must not go on from its cursors (that would leave a hole)."""


class MalformedPage(ScanfillError):
    """A page that is not valid JSON of the documented shape, or that breaks the paging contract."""


class Fenced(ScanfillError):
    """This worker no longer owns what it is committing (lease taken over, or the cursor moved)."""
