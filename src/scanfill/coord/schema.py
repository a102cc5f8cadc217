"""The versioned schema: ledger tables, cursors (slices with leases), workers and progress.

`init` is idempotent and upgrades in place: each entry of MIGRATIONS runs once, in order, inside
one transaction guarded by an advisory lock, and the version is recorded in `scanfill_meta`.

JSON columns are `json`, not `jsonb`: measured here, the same rows COPY ~1.5x faster into `json`
(jsonb conversion dominates the server's CPU), `json` keeps the served text byte for byte, and it
can hold a `\\u0000` escape that `jsonb` rejects. Id columns use `COLLATE "C"`: ids are hex and
byte order is all they need, and their unique indexes build 1.4-2x faster that way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

import psycopg
from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.errors import SchemaError
from scanfill.rows import COPY_TYPES, EventRow, UpdateRow

SCHEMA_VERSION = 13
LOCK_KEY = 0x5CA0F111  # advisory-lock key for schema changes and planning
# how long a transaction holding LOCK_KEY may sit idle: a process frozen while holding it (SIGSTOP, a
# hung host) would otherwise stop every other process's start and planning until its TCP connection died
LOCK_IDLE = "60s"

UPDATE_COLUMNS = UpdateRow._fields
UPDATE_TYPES = COPY_TYPES[UpdateRow]
EVENT_COLUMNS = EventRow._fields
EVENT_TYPES = COPY_TYPES[EventRow]

V1 = """
CREATE TABLE IF NOT EXISTS {s}.ledger_updates (
    update_id       text COLLATE "C" NOT NULL,
    migration_id    bigint NOT NULL,
    synchronizer_id text NOT NULL,
    record_time     timestamptz NOT NULL,
    effective_at    timestamptz,
    "offset"        text,
    workflow_id     text,
    kind            text NOT NULL,
    round           bigint,
    event_count     integer NOT NULL,
    update_json     json NOT NULL,
    CONSTRAINT ledger_updates_pkey PRIMARY KEY (update_id)
);
CREATE INDEX IF NOT EXISTS ledger_updates_mig_sync_time_idx
    ON {s}.ledger_updates (migration_id, synchronizer_id, record_time);
CREATE INDEX IF NOT EXISTS ledger_updates_round_idx ON {s}.ledger_updates (round);

CREATE TABLE IF NOT EXISTS {s}.ledger_events (
    event_id        text COLLATE "C" NOT NULL,
    update_id       text COLLATE "C" NOT NULL,
    migration_id    bigint NOT NULL,
    synchronizer_id text NOT NULL,
    record_time     timestamptz NOT NULL,
    event_type      text NOT NULL,
    contract_id     text COLLATE "C",
    template_id     text,
    package_name    text,
    choice          text,
    consuming       boolean,
    payload         json,
    exercise_result json,
    signatories     text[],
    observers       text[],
    acting_parties  text[],
    child_event_ids text[],
    created_at_ts   timestamptz,
    round           bigint,
    CONSTRAINT ledger_events_pkey PRIMARY KEY (event_id)
);
CREATE INDEX IF NOT EXISTS ledger_events_update_id_idx ON {s}.ledger_events (update_id);
CREATE INDEX IF NOT EXISTS ledger_events_contract_id_idx ON {s}.ledger_events (contract_id);
CREATE INDEX IF NOT EXISTS ledger_events_template_id_idx ON {s}.ledger_events (template_id);

-- One row per (migration, synchronizer) as Scan announced it: what the slices must cover.
CREATE TABLE IF NOT EXISTS {s}.backfill_ranges (
    migration_id    bigint NOT NULL,
    synchronizer_id text NOT NULL,
    min_time        timestamptz NOT NULL,
    max_time        timestamptz NOT NULL,
    min_text        text NOT NULL,
    max_text        text NOT NULL,
    source_complete boolean NOT NULL,
    planned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, synchronizer_id)
);

-- One row per slice [min_time, max_time) of a range. `last_before` is the exact record-time string
-- of the oldest committed update (the next request's `before`); it moves only in the transaction
-- that commits that page. `lease_epoch` fences commits of a worker whose lease was taken over.
CREATE TABLE IF NOT EXISTS {s}.backfill_cursors (
    cursor_name     text PRIMARY KEY,
    migration_id    bigint NOT NULL,
    synchronizer_id text NOT NULL,
    min_time        timestamptz NOT NULL,
    max_time        timestamptz NOT NULL,
    last_before     text NOT NULL,
    complete        boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    slot            integer NOT NULL DEFAULT 0,
    lease_owner     text,
    lease_until     timestamptz,
    lease_epoch     bigint NOT NULL DEFAULT 0,
    updates_loaded  bigint NOT NULL DEFAULT 0,
    events_loaded   bigint NOT NULL DEFAULT 0,
    pages_loaded    bigint NOT NULL DEFAULT 0,
    bytes_loaded    bigint NOT NULL DEFAULT 0,
    completed_at    timestamptz,
    split_from      text
);
CREATE INDEX IF NOT EXISTS backfill_cursors_open_idx ON {s}.backfill_cursors (complete, lease_until);

CREATE TABLE IF NOT EXISTS {s}.backfill_workers (
    worker_id   text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat   timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    state       text NOT NULL DEFAULT 'running',
    rows_loaded bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS {s}.backfill_progress (
    sampled_at  timestamptz NOT NULL DEFAULT now(),
    worker_id   text NOT NULL,
    updates     bigint NOT NULL,
    events      bigint NOT NULL,
    bytes       bigint NOT NULL,
    pages       bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS backfill_progress_time_idx ON {s}.backfill_progress (sampled_at);

-- Requests to every worker, wherever it runs (`scanfill abort` sets stop).
CREATE TABLE IF NOT EXISTS {s}.backfill_control (
    key   text PRIMARY KEY,
    value text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);
"""

# Version 2: what `scanfill prepare` dropped, kept in a logged table so `restore` rebuilds it exactly.
V2 = """
CREATE TABLE IF NOT EXISTS {s}.scanfill_saved_indexes (
    table_name     text NOT NULL,
    object_name    text NOT NULL,
    kind           text NOT NULL,
    index_def      text NOT NULL,
    constraint_def text,
    saved_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    restored_at    timestamptz,
    PRIMARY KEY (table_name, object_name, saved_at)
);
"""

# Version 3: import updates (`run --import-updates`), paged by update id, one cursor per migration.
V3 = """
CREATE TABLE IF NOT EXISTS {s}.backfill_import_cursors (
    migration_id    bigint PRIMARY KEY,
    last_update_id  text COLLATE "C" NOT NULL DEFAULT '',
    complete        boolean NOT NULL DEFAULT false,
    updates_loaded  bigint NOT NULL DEFAULT 0,
    events_loaded   bigint NOT NULL DEFAULT 0,
    lease_owner     text,
    lease_until     timestamptz,
    lease_epoch     bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
"""

# Version 4: lz4 TOAST compression for the JSON columns where the server has it (PostgreSQL 14+
# built --with-lz4, e.g. Debian's and Supabase's). Measured with benchmarks/toast.py: COPY 1.2-1.4x
# faster than the default pglz, and smaller tables. Servers without lz4 keep pglz.
JSON_COLUMNS = {"ledger_updates": ("update_json",), "ledger_events": ("payload", "exercise_result")}


def _v4(conn: Conn, s: str) -> None:
    try:
        with conn.transaction():  # a savepoint: a server without lz4 raises and keeps pglz
            for table, cols in JSON_COLUMNS.items():
                for col in cols:
                    conn.execute(f"ALTER TABLE {s}.{table} ALTER COLUMN {col} SET COMPRESSION lz4".encode())
    except psycopg.errors.FeatureNotSupported:
        pass


# Version 5: `interface_id` of exercised events (the token standard's choices are exercised through
# interfaces). Events loaded before with `--update-json envelope` have it NULL: `run --refetch` them.
V5 = """
ALTER TABLE {s}.ledger_events ADD COLUMN IF NOT EXISTS interface_id text;
"""

# Version 6: following (`scanfill follow`). A range's `followed_after` splits it between the
# backfill (up to and including it) and the follower (after it; the follower moves `max`). One
# follower lease; a cursor per stream; `scan_events` keeps what Scan prunes (verdicts, traffic
# summaries, app activity records) and is never truncated by scanfill: it cannot be fetched again.
V6 = """
ALTER TABLE {s}.backfill_ranges ADD COLUMN IF NOT EXISTS followed_after text;

CREATE TABLE IF NOT EXISTS {s}.follow_leader (
    id          integer PRIMARY KEY CHECK (id = 1),
    owner       text,
    host        text,
    pid         integer,
    lease_until timestamptz,
    lease_epoch bigint NOT NULL DEFAULT 0,
    since       timestamptz,
    heartbeat   timestamptz,
    updates_loaded bigint NOT NULL DEFAULT 0,
    events_loaded  bigint NOT NULL DEFAULT 0
);
INSERT INTO {s}.follow_leader (id) VALUES (1) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS {s}.follow_cursors (
    stream       text PRIMARY KEY,
    migration_id bigint NOT NULL,
    record_text  text NOT NULL,
    record_time  timestamptz NOT NULL,
    items        bigint NOT NULL DEFAULT 0,  -- updates (or events items) this stream stored
    rows_events  bigint NOT NULL DEFAULT 0,  -- ledger_events rows the updates stream stored
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {s}.scan_events (
    update_id            text COLLATE "C" PRIMARY KEY,
    migration_id         bigint NOT NULL,
    domain_id            text,
    record_time          timestamptz NOT NULL,
    verdict              json,
    traffic_summary      json,
    app_activity_records json,
    stored_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scan_events_time_idx ON {s}.scan_events (migration_id, record_time);

-- Scans that served a page other scans did not agree with (`run --agree K`).
CREATE TABLE IF NOT EXISTS {s}.scan_disagreements (
    seen_at       timestamptz NOT NULL DEFAULT now(),
    url           text NOT NULL,
    request       text NOT NULL,
    differing_ids text[] NOT NULL
);
"""

# Liveness must not rest on a pid being visible: a process in another PID namespace (a container
# with the same host name) has pids this one cannot see. Each process records its PID namespace;
# a pid is looked up only by a process in the same one.
V7 = """
ALTER TABLE {s}.follow_leader ADD COLUMN IF NOT EXISTS pidns text;
ALTER TABLE {s}.backfill_workers ADD COLUMN IF NOT EXISTS pidns text;
-- what the follower could not get past and waited out (status shows it: a follower that keeps
-- asking again is not silent)
ALTER TABLE {s}.follow_leader ADD COLUMN IF NOT EXISTS problems bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.follow_leader ADD COLUMN IF NOT EXISTS last_problem text;
ALTER TABLE {s}.follow_leader ADD COLUMN IF NOT EXISTS last_problem_at timestamptz;
"""

# Version 8: import updates are identified by (migration, id): Scan uses the contract id as an import
# update's id, and a contract alive across several hard migrations is imported by each of them. And
# contract state: `contracts` (one row per contract, its lifespan in positions) and the PQS-style
# functions over it, in `state/contracts.sql`.
_KEYS = {"ledger_updates": ("ledger_updates_pkey", "update_id"), "ledger_events": ("ledger_events_pkey", "event_id")}


def _v8(conn: Conn, s: str) -> None:
    for table, (name, col) in _KEYS.items():
        has = conn.execute("SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
                           (name, f"{s}.{table}")).fetchone()  # fmt: skip
        if has:
            conn.execute(f"ALTER TABLE {s}.{table} DROP CONSTRAINT {name}, "
                         f"ADD CONSTRAINT {name} PRIMARY KEY ({col}, migration_id)".encode())  # fmt: skip
        # dropped by `prepare`: what `restore` will build is the new key
        conn.execute(f"UPDATE {s}.scanfill_saved_indexes SET index_def = replace(index_def, '({col})', "
                     f"'({col}, migration_id)'), constraint_def = 'PRIMARY KEY ({col}, migration_id)' "
                     f"WHERE object_name = %s AND restored_at IS NULL".encode(), (name,))  # fmt: skip
    conn.execute(contracts_ddl(s).encode())
    if conn.execute(f"SELECT 1 FROM {s}.ledger_events LIMIT 1".encode()).fetchone():
        conn.execute(f"INSERT INTO {s}.scanfill_meta VALUES ('contracts_stale', 'loaded before contract state "
                     "existed') ON CONFLICT (key) DO NOTHING".encode())  # fmt: skip


def contracts_ddl(s: str) -> str:
    """The contract-state table and functions (idempotent: `CREATE ... IF NOT EXISTS` / `OR REPLACE`)."""
    return files("scanfill.state").joinpath("contracts.sql").read_text().replace("{s}", s)


_FUNCTIONS_MARK = "-- FUNCTIONS:"


def contracts_functions(s: str) -> str:
    """Only the functions of contracts.sql: re-applied with the others when their text changes, never
    the table's indexes (`prepare` may have dropped them for a load)."""
    text = contracts_ddl(s)
    return text[text.index(_FUNCTIONS_MARK):]


# Version 9: the completeness ledger, one row per (migration, synchronizer, UTC day) kept by every
# commit (counts, first and last record time, how the rows came, how many scans agreed) and what
# `verify --against-scan --days` found; a slice a worker gave up on says so (a gap, not "waiting").
V9 = """
CREATE TABLE IF NOT EXISTS {s}.completeness (
    migration_id      bigint NOT NULL,
    synchronizer_id   text NOT NULL,
    day               date NOT NULL,
    updates           bigint NOT NULL DEFAULT 0,
    events            bigint NOT NULL DEFAULT 0,
    first_record_time timestamptz,
    last_record_time  timestamptz,
    sources           text[] NOT NULL DEFAULT '{}',
    agreed_by         integer,
    verified_at       timestamptz,
    verified_by       text[],
    verified_digest   text,
    verified_updates  bigint,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, synchronizer_id, day)
);
ALTER TABLE {s}.backfill_progress ADD COLUMN IF NOT EXISTS lag_s double precision;  -- the follower's, over time
ALTER TABLE {s}.backfill_cursors ADD COLUMN IF NOT EXISTS failed_at timestamptz;
ALTER TABLE {s}.backfill_cursors ADD COLUMN IF NOT EXISTS failure text;
"""


def _v9(conn: Conn, s: str) -> None:
    from scanfill.coord.store import statements

    conn.execute(V9.replace("{s}", s).encode())
    # a copy loaded before: its days counted once from the tables (how its rows came is not known)
    conn.execute(statements()["days_count"].replace("{s}", s).encode(),
                 {"m": None, "sync": None, "lo": None, "hi": None, "source": "counted"})  # fmt: skip



# Version 10: what `scanfill export` wrote to each lake, per (migration, UTC day) partition: the
# source's mark (counts and last change of the completeness ledger) it exported, so a second export
# writes only what changed since.
V10 = """
CREATE TABLE IF NOT EXISTS {s}.lake_exports (
    target        text NOT NULL,
    migration_id  bigint NOT NULL,
    day           date NOT NULL,
    source_mark   text NOT NULL,
    updates       bigint NOT NULL,
    events        bigint NOT NULL,
    delta_version bigint,
    exported_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, migration_id, day)
);
-- `run --lake`: every Parquet file a commit wrote, recorded in that commit's transaction; files are
-- invisible to readers until a publisher adds them to the Delta log (as publish `publish_id`, the
-- log's app-transaction version), so a rolled-back commit's files are never seen.
CREATE SEQUENCE IF NOT EXISTS {s}.lake_publish_seq;
CREATE TABLE IF NOT EXISTS {s}.lake_files (
    seq          bigserial PRIMARY KEY,
    target       text NOT NULL,
    lake_table   text NOT NULL,
    path         text NOT NULL,
    migration_id bigint NOT NULL,
    day          date NOT NULL,
    rows         bigint NOT NULL,
    bytes        bigint NOT NULL,
    first_time   timestamptz,
    last_time    timestamptz,
    publish_id   bigint,
    published    boolean NOT NULL DEFAULT false,
    described    boolean NOT NULL DEFAULT false,  -- its partition compacted and its manifest written since
    staged_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS lake_files_pending_idx ON {s}.lake_files (target, lake_table) WHERE NOT published;
"""

# v11: round economics. One row per TransferSummary-bearing exercise (outermost in its subtree) and
# per DevNet tap, written by the loaders in each commit (`economy/`); the figures are computed from
# it and from contract state by the functions of `economy/economy.sql`. Amounts are the served
# Decimals, exactly (Daml's Numeric 10 fits numeric(38,10)). A copy loaded before v11 gets its rows
# from `scanfill state rebuild`.
V11 = """
CREATE TABLE IF NOT EXISTS {s}.amulet_transfers (
    event_id                   text COLLATE "C" NOT NULL,
    update_id                  text COLLATE "C" NOT NULL,
    migration_id               bigint NOT NULL,
    synchronizer_id            text NOT NULL,
    record_time                timestamptz NOT NULL,
    pos                        bigint NOT NULL,
    choice                     text NOT NULL,
    package_id                 text,
    amulet_version             text,
    round                      bigint,
    party                      text,
    provider                   text,
    input_amulets              numeric(38,10),
    app_rewards                numeric(38,10),
    validator_rewards          numeric(38,10),
    faucet_rewards             numeric(38,10),
    sv_rewards                 numeric(38,10),
    unclaimed_activity_rewards numeric(38,10),
    dev_fund_rewards           numeric(38,10),
    holding_fees               numeric(38,10),
    output_fees                numeric(38,10),
    sender_change_fee          numeric(38,10),
    sender_change_amount       numeric(38,10),
    amulet_price               numeric(38,10),
    amulet_paid                numeric(38,10),
    tapped                     numeric(38,10),
    traffic_bytes              bigint,
    readable                   boolean NOT NULL DEFAULT true
);
-- one row per event, keyed by a 16-byte digest of its id (as contracts_key: a B-tree on the long id
-- cost more to keep up than the rows); the round index serves windows of rounds
CREATE UNIQUE INDEX IF NOT EXISTS amulet_transfers_key ON {s}.amulet_transfers ((md5(event_id)::uuid));
CREATE INDEX IF NOT EXISTS amulet_transfers_round_idx ON {s}.amulet_transfers (round);
"""

# v12: what jsonb cannot hold, and what could not be read, kept and named. `contracts.payload_exact`
# (json) holds a payload whose texts have NUL or a lone surrogate, exactly; `payload` (jsonb) then
# holds it with those characters written as their JSON escape text (`\u0000`: six characters), so
# SQL can still query it (NULL: `payload` is exact). `amulet_transfers.problem` names what of a
# summary could not be read: fields missing, or an amount that is not a Daml Numeric 10 (the served
# value; that column is then NULL, never rounded; the ledger keeps the value as served).
V12 = """
ALTER TABLE {s}.contracts ADD COLUMN IF NOT EXISTS payload_exact json;
ALTER TABLE {s}.amulet_transfers ADD COLUMN IF NOT EXISTS problem text;
"""

# v13: what `verify` proved wrong about a day (its counts differ from the tables, or no scan asked
# serves the stored copy): the reason and the repair, kept on the day until a refetch covering it, a
# scan that serves exactly the stored copy, or (for counts) the tables holding again what the
# loaders committed (`expected_*`) clears it; until then the day is a gap and the watermark stops
# before it (completeness.sql).
V13 = """
ALTER TABLE {s}.completeness ADD COLUMN IF NOT EXISTS finding text;
ALTER TABLE {s}.completeness ADD COLUMN IF NOT EXISTS repair text;
ALTER TABLE {s}.completeness ADD COLUMN IF NOT EXISTS found_at timestamptz;
ALTER TABLE {s}.completeness ADD COLUMN IF NOT EXISTS expected_updates bigint;
ALTER TABLE {s}.completeness ADD COLUMN IF NOT EXISTS expected_events bigint;
"""

MIGRATIONS: list[str | Callable[[Conn, str], None]] = [V1, V2, V3, _v4, V5, V6, V7, _v8, _v9, V10, V11, V12, V13]


def meta_table(db: Database) -> sql.Composed:
    return db.t("scanfill_meta")


def schema_version(db: Database, conn: Conn) -> int:
    """0 when scanfill's tables are absent."""
    row = conn.execute("SELECT to_regclass(%s)", (db.qualified("scanfill_meta"),)).fetchone()
    if row is None or row[0] is None:
        return 0
    got = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = 'schema_version'").format(meta_table(db))).fetchone()
    return int(got[0]) if got else 0


def take_lock(conn: Conn) -> None:
    """Inside the caller's transaction: LOCK_KEY, held until it ends, which LOCK_IDLE bounds."""
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)", (LOCK_IDLE,))
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))


def init(db: Database) -> tuple[int, int]:
    """Create or upgrade the schema; returns (version before, version after)."""
    with db.connect() as conn:
        take_lock(conn)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(db.schema)))
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value text NOT NULL)").format(meta_table(db))
        )
        before = schema_version(db, conn)
        if before > SCHEMA_VERSION:
            raise SchemaError(
                f"the database schema is version {before}, newer than this scanfill "
                f"({SCHEMA_VERSION}): upgrade scanfill"
            )
        s = sql.Identifier(db.schema).as_string(conn)
        for version in range(before + 1, SCHEMA_VERSION + 1):
            step = MIGRATIONS[version - 1]
            if callable(step):
                step(conn, s)
            else:
                conn.execute(step.replace("{s}", s).encode())
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ).format(meta_table(db)),
            (str(SCHEMA_VERSION),),
        )
        _functions(db, conn, s)
        conn.commit()
    return before, SCHEMA_VERSION


def functions_sql(s: str) -> str:
    """The SQL functions and views that hold no data (contract state's, completeness.sql,
    economy.sql): replaced whenever their text changes."""
    from scanfill.economy.packages import AMULET_PACKAGES

    known = ", ".join(f"('{k}', '{v}')" for k, v in AMULET_PACKAGES.items())
    economy = files("scanfill.economy").joinpath("economy.sql").read_text().replace("{packages}", known)
    completeness = files("scanfill.coord").joinpath("completeness.sql").read_text()
    return contracts_functions(s) + (completeness + economy).replace("{s}", s)


def _functions(db: Database, conn: Conn, s: str) -> None:
    """Functions are applied whenever their text changed, not once per schema version, so a fixed
    function reaches every database with the release that fixed it."""
    import hashlib

    text = functions_sql(s)
    digest = hashlib.sha256(text.encode()).hexdigest()
    got = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = 'functions_digest'").format(meta_table(db))).fetchone()
    if got is None or got[0] != digest:
        conn.execute(text.encode())
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('functions_digest', %s) ON CONFLICT (key) DO UPDATE SET "
                             "value = EXCLUDED.value").format(meta_table(db)), (digest,))  # fmt: skip


def require(db: Database) -> None:
    """Fail clearly when `scanfill init` has not been run (or the schema is from a newer release)."""
    with db.connect() as conn:
        v = schema_version(db, conn)
    if v == 0:
        raise SchemaError(f"scanfill's tables are not in schema {db.schema!r} of {db.shown}: run `scanfill init`")
    if v > SCHEMA_VERSION:
        raise SchemaError(f"the database schema is version {v}, newer than this scanfill ({SCHEMA_VERSION}): a newer "
                          "scanfill wrote it. Upgrade scanfill (pip install -U scanfill); this one will not touch it")  # fmt: skip
    if v != SCHEMA_VERSION:
        raise SchemaError(f"schema version {v} but this scanfill expects {SCHEMA_VERSION}: run `scanfill init`")
