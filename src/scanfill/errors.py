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
    │   └── Unstorable       a value every scan serves that cannot be stored as served (past Daml's
    │                        limits, or refused by the database each time): names the update, the field
    │                        and the way out                                        terminal for that slice
    │                                                                               and for the follower
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


class Unstorable(MalformedPage):
    """A served value that cannot be stored as served and that asking again cannot change: nested
    deeper than Daml-LF allows, or refused by the database every time (a data exception, a limit).
    The message names the update, the field and what the user can do; the slice (or the follower,
    which cannot skip) stops there, nothing of the page is stored."""


class Fenced(ScanfillError):
    """This worker no longer owns what it is committing (lease taken over, or the cursor moved)."""


# SQLSTATEs of errors that come from the moment, not from what was sent: asking again can succeed.
# 40001 serialization failure, 40P01 deadlock, 40003 completion unknown, 55P03 lock not available,
# 57014 query canceled (the commit guard's statement_timeout), 25P03 idle-in-transaction timeout,
# 57P01-03 shutdown / crash recovery / not accepting connections, 53300 too many connections,
# 58000/58030 system and I/O errors (a failing disk is judged by its message below).
_TRANSIENT_STATES = frozenset({"40001", "40P01", "40003", "55P03", "57014", "25P03", "57P01", "57P02", "57P03",
                               "57P05", "53300", "58000", "58030"})  # fmt: skip


# SQLSTATEs PostgreSQL gives a failed access to its own files (errcode_for_file_access: EACCES and
# EPERM are 42501, ENOENT 58P01, EEXIST 58P02); nothing in the rows causes them.
_FILE_ACCESS_STATES = frozenset({"42501", "58P01", "58P02"})


def db_error_kind(exc: BaseException) -> str:
    """How a database error that ended a commit will behave if the same commit is sent again:
    `transient` (connection lost, deadlock, serialization, a guard's timeout, shutdown: the next try
    can land), `resource` (disk full, out of memory: every commit fails until the operator frees it),
    or `permanent` (a data exception, class 22; a program limit, class 54; an integrity or schema
    error: the same rows fail the same way every time, so retrying would loop without end)."""
    state = getattr(exc, "sqlstate", None) or ""
    if not state:
        return "transient"  # no SQLSTATE: the connection broke before the server said anything
    if state.startswith("53") and state != "53300":
        return "resource"
    if state.startswith("58") and "No space left" in str(exc):
        return "resource"
    if state in _FILE_ACCESS_STATES and str(exc).lstrip().startswith("could not"):
        return "resource"  # the server's own files (permissions, a lost tablespace): the operator's to fix
    if state.startswith("08") or state in _TRANSIENT_STATES:
        return "transient"
    return "permanent"
