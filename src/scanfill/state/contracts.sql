-- Contract state: one row per contract, its lifespan as positions (migration * 10^16 + record time
-- in microseconds), kept by the loaders in the transaction of each page (state/sink.py merges).
-- A contract is active at position p when created_pos <= p < archived_pos (archived_pos NULL: still
-- active). A contract created and consumed in one update has created_pos = archived_pos: never active.
-- A row may hold only the end of a life (its create not loaded yet): created_pos is NULL, never active.

CREATE TABLE IF NOT EXISTS {s}.contracts (
    contract_id              text COLLATE "C" NOT NULL,
    template_id              text,   -- <package id>:<module>:<entity>
    package_name             text,
    template_name            text,   -- <module>:<entity>, across package versions
    created_update_id        text COLLATE "C",
    created_migration_id     bigint,
    created_synchronizer_id  text,
    created_record_time      timestamptz,
    created_at               timestamptz,  -- ledger effective time of the create
    created_pos              bigint,
    payload                  jsonb,        -- create arguments, compact JSON (Daml JSON API encoding); a text
                                           -- with NUL or a lone surrogate holds them as escape text (`\u0000`),
                                           -- the exact value then in payload_exact (json, added by schema v12)
    signatories              text[],
    observers                text[],
    archived_update_id       text COLLATE "C",
    archived_migration_id    bigint,
    archived_synchronizer_id text,
    archived_record_time     timestamptz,
    archived_choice          text,         -- the consuming choice (Archive, AmuletRules_Transfer inputs, ...)
    archived_pos             bigint,
    synchronizer_id          text,         -- where it is now: its newest assignment's target, else its creation's
    synchronizer_pos         bigint
);
-- One row per contract, keyed by a 16-byte digest of its id: a B-tree on the 138-character id
-- weighed 241 B per contract, this one about 40 (the merge upserts on it; `prepare` keeps it).
CREATE UNIQUE INDEX IF NOT EXISTS contracts_key ON {s}.contracts ((md5(contract_id)::uuid));
-- `active()` scans whichever bounds fewer entries: created_pos <= p, or end > p (no end: the largest
-- bigint); each covers the other position, so that scan reads no table row.
CREATE INDEX IF NOT EXISTS contracts_template_created_idx ON {s}.contracts (template_name, created_pos)
    INCLUDE (archived_pos);
CREATE INDEX IF NOT EXISTS contracts_template_ends_idx ON {s}.contracts
    (template_name, (coalesce(archived_pos, 9223372036854775807))) INCLUDE (created_pos);
ALTER TABLE {s}.contracts ALTER COLUMN payload SET STORAGE MAIN;

-- FUNCTIONS: what follows holds no data and is applied again whenever its text changes (coord.schema).

-- A position: (migration, record time) as one ordered number.
CREATE OR REPLACE FUNCTION {s}.ledger_position(migration bigint, at_time timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT migration * 10000000000000000 + (extract(epoch FROM at_time) * 1000000)::bigint $$;

-- `<module>:<entity>` of any accepted template form (module names hold dots, never colons).
CREATE OR REPLACE FUNCTION {s}.template_name(template text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT substring(template FROM '([^:]*:[^:]*)$') $$;

-- A template given as `<package id>:<module>:<entity>`, `<package-name>:<module>:<entity>` (or
-- `#<package-name>:...`), or `<module>:<entity>` (every package version).
CREATE OR REPLACE FUNCTION {s}.template_is(template_id text, package_name text, template text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT template IS NULL
    OR ltrim(template, '#') = {s}.template_name(template_id)
    OR template = template_id
    OR ltrim(template, '#') = package_name || ':' || {s}.template_name(template_id) $$;

-- The migration a bare time means: the newest one whose history had begun by then.
CREATE OR REPLACE FUNCTION {s}.migration_at(at_time timestamptz) RETURNS bigint
LANGUAGE sql STABLE
AS $$ SELECT coalesce((SELECT max(migration_id) FROM {s}.backfill_ranges WHERE min_time <= at_time),
                (SELECT max(created_migration_id) FROM {s}.contracts
                  WHERE created_record_time <= at_time),
                (SELECT min(migration_id) FROM {s}.backfill_ranges), 0) $$;

-- The position (at_migration, at_time): NULL time is the end of that migration, NULL migration the
-- one in force at that time; both NULL is now (NULL).
CREATE OR REPLACE FUNCTION {s}.position_at(at_migration bigint, at_time timestamptz) RETURNS bigint
LANGUAGE sql STABLE
AS $$ SELECT CASE WHEN at_time IS NULL AND at_migration IS NULL THEN NULL
            WHEN at_time IS NULL THEN at_migration * 10000000000000000 + 9999999999999999
            ELSE {s}.ledger_position(coalesce(at_migration, {s}.migration_at(at_time)), at_time) END $$;

-- Every template name stored, by skipping through the index (one descent per name).
CREATE OR REPLACE FUNCTION {s}.template_names() RETURNS text[] LANGUAGE sql STABLE AS $$
    WITH RECURSIVE t AS (
        (SELECT c.template_name FROM {s}.contracts c WHERE c.template_name IS NOT NULL ORDER BY 1 LIMIT 1)
        UNION ALL
        SELECT (SELECT c.template_name FROM {s}.contracts c WHERE c.template_name > t.template_name ORDER BY 1 LIMIT 1)
        FROM t WHERE t.template_name IS NOT NULL)
    SELECT coalesce(array_agg(template_name), '{}') FROM t WHERE template_name IS NOT NULL
$$;

-- Contracts active at a position (PQS `active()`): NULL template is every template. Two steps: the
-- (template, creation position) pairs of active contracts from an index alone (planned for this
-- position, so from the smaller side), then those rows.
CREATE OR REPLACE FUNCTION {s}.active(template text DEFAULT NULL, at_migration bigint DEFAULT NULL,
                                      at_time timestamptz DEFAULT NULL)
RETURNS SETOF {s}.contracts LANGUAGE plpgsql STABLE AS $$
DECLARE
    p bigint := coalesce({s}.position_at(at_migration, at_time), 9223372036854775806);
    names text[] := CASE WHEN template IS NULL THEN {s}.template_names() ELSE ARRAY[{s}.template_name(template)] END;
    tns text[];
    poss bigint[];
BEGIN
    EXECUTE 'SELECT array_agg(k.template_name), array_agg(k.created_pos) FROM (
                 SELECT DISTINCT c.template_name, c.created_pos FROM {s}.contracts c
                 WHERE c.template_name = ANY($1) AND c.created_pos <= $2
                   AND coalesce(c.archived_pos, 9223372036854775807) > $2) k'
        INTO tns, poss USING names, p;
    RETURN QUERY SELECT c.* FROM unnest(tns, poss) AS k(tn, cp)
        JOIN {s}.contracts c ON c.template_name = k.tn AND c.created_pos = k.cp
        WHERE coalesce(c.archived_pos, 9223372036854775807) > p
          AND (template IS NULL OR {s}.template_is(c.template_id, c.package_name, template))
        ORDER BY c.created_pos, c.contract_id;
END $$;

-- Contracts whose life began (ended: whose life ended, by its first consuming exercise) with a
-- record time in [from_time, to_time) (NULL bounds: open), in that order.
CREATE OR REPLACE FUNCTION {s}.lives_between(template text, from_time timestamptz, to_time timestamptz,
                                             ended boolean)
RETURNS SETOF {s}.contracts LANGUAGE sql STABLE AS $$
    SELECT * FROM {s}.contracts c
    WHERE (CASE WHEN ended THEN c.archived_pos ELSE c.created_pos END) IS NOT NULL
      AND (template IS NULL OR (c.template_name = {s}.template_name(template)
                                AND {s}.template_is(c.template_id, c.package_name, template)))
      AND (from_time IS NULL OR CASE WHEN ended THEN c.archived_record_time ELSE c.created_record_time END >= from_time)
      AND (to_time IS NULL OR CASE WHEN ended THEN c.archived_record_time ELSE c.created_record_time END < to_time)
    ORDER BY CASE WHEN ended THEN c.archived_pos ELSE c.created_pos END, c.contract_id
$$;

CREATE OR REPLACE FUNCTION {s}.creates(template text DEFAULT NULL, from_time timestamptz DEFAULT NULL,
                                       to_time timestamptz DEFAULT NULL)
RETURNS SETOF {s}.contracts LANGUAGE sql STABLE AS $$ SELECT * FROM {s}.lives_between(template, from_time, to_time, false) $$;

CREATE OR REPLACE FUNCTION {s}.archives(template text DEFAULT NULL, from_time timestamptz DEFAULT NULL,
                                        to_time timestamptz DEFAULT NULL)
RETURNS SETOF {s}.contracts LANGUAGE sql STABLE AS $$ SELECT * FROM {s}.lives_between(template, from_time, to_time, true) $$;

-- Exercised events (consuming or not) of a choice (NULL: every choice) in [from_time, to_time).
CREATE OR REPLACE FUNCTION {s}.exercises(choice text DEFAULT NULL, from_time timestamptz DEFAULT NULL,
                                         to_time timestamptz DEFAULT NULL)
RETURNS TABLE (event_id text, update_id text, migration_id bigint, synchronizer_id text, record_time timestamptz,
               contract_id text, template_id text, package_name text, interface_id text, choice text,
               consuming boolean, acting_parties text[], choice_argument json, exercise_result json,
               child_event_ids text[])
LANGUAGE sql STABLE AS $$
    SELECT e.event_id, e.update_id, e.migration_id, e.synchronizer_id, e.record_time, e.contract_id, e.template_id,
           e.package_name, e.interface_id, e.choice, e.consuming, e.acting_parties, e.payload, e.exercise_result,
           e.child_event_ids
    FROM {s}.ledger_events e
    WHERE e.event_type = 'exercised_event'
      AND (exercises.choice IS NULL OR e.choice = exercises.choice)
      AND (from_time IS NULL OR e.record_time >= from_time)
      AND (to_time IS NULL OR e.record_time < to_time)
    ORDER BY e.migration_id, e.record_time, e.event_id
$$;

-- One contract, active or not.
CREATE OR REPLACE FUNCTION {s}.lookup_contract(contract_id text)
RETURNS SETOF {s}.contracts LANGUAGE sql STABLE AS $$
    SELECT * FROM {s}.contracts c WHERE md5(c.contract_id)::uuid = md5(lookup_contract.contract_id)::uuid
      AND c.contract_id = lookup_contract.contract_id
$$;

-- The round in force at a position: the newest OpenMiningRound created by then that had opened.
CREATE OR REPLACE FUNCTION {s}.round_at(at_migration bigint DEFAULT NULL, at_time timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT max((c.payload->'round'->>'number')::bigint) FROM {s}.contracts c
    WHERE c.template_name = 'Splice.Round:OpenMiningRound'
      AND c.created_pos <= coalesce({s}.position_at(at_migration, at_time), 9223372036854775807)
      AND (at_time IS NULL OR (c.payload->>'opensAt')::timestamptz <= at_time)
$$;

-- The earliest OpenMiningRound active at a position (NULL: now): the round Scan's
-- /v1/holdings/summary computes holding fees as of when not asked (HttpScanHandler.getHoldingsSummaryAt:
-- the first OpenMiningRound of its current ACS, which lists the oldest first).
CREATE OR REPLACE FUNCTION {s}.earliest_open_round(at_migration bigint DEFAULT NULL, at_time timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT min((c.payload->'round'->>'number')::bigint) FROM {s}.active('Splice.Round:OpenMiningRound', at_migration, at_time) c
$$;

-- Amulet and LockedAmulet holdings active at a position, with the holding fees accrued as of a round,
-- as Scan's /v1/holdings/summary computes them (SpliceUtil.holdingFee): min(initialAmount,
-- (as_of_round - createdAt) x ratePerRound), negative for an amulet created after that round, as
-- Scan's are. `as_of_round` NULL is Scan's default: the earliest open round of the current state
-- (earliest_open_round(), at the end of the copy), whatever the position; the recorded MainNet
-- summaries say so (as of 81323, the earliest round open when it was recorded, for a 06:00 snapshot
-- whose rounds were then ~81309). Exact numerics.
DROP FUNCTION IF EXISTS {s}.holdings(bigint, timestamptz, text);
CREATE OR REPLACE FUNCTION {s}.holdings(at_migration bigint DEFAULT NULL, at_time timestamptz DEFAULT NULL,
                                        party text DEFAULT NULL, as_of_round bigint DEFAULT NULL)
RETURNS TABLE (owner text, contract_id text, template_name text, locked boolean, initial_amount numeric,
               created_round bigint, at_round bigint, rate_per_round numeric, holding_fees numeric,
               amount numeric)
LANGUAGE sql STABLE AS $$
    WITH r AS MATERIALIZED (SELECT coalesce(as_of_round, {s}.earliest_open_round()) AS n),  -- once, not per holding
    h AS (
        SELECT c.contract_id, c.template_name, false AS locked, c.payload AS a
        FROM {s}.active('Splice.Amulet:Amulet', at_migration, at_time) c
        UNION ALL
        SELECT c.contract_id, c.template_name, true, c.payload->'amulet'
        FROM {s}.active('Splice.Amulet:LockedAmulet', at_migration, at_time) c)
    SELECT h.a->>'owner', h.contract_id, h.template_name, h.locked, (h.a->'amount'->>'initialAmount')::numeric,
           (h.a->'amount'->'createdAt'->>'number')::bigint, r.n, (h.a->'amount'->'ratePerRound'->>'rate')::numeric,
           least((h.a->'amount'->>'initialAmount')::numeric,
                 coalesce(r.n - (h.a->'amount'->'createdAt'->>'number')::bigint, 0)
                 * (h.a->'amount'->'ratePerRound'->>'rate')::numeric),
           (h.a->'amount'->>'initialAmount')::numeric - least((h.a->'amount'->>'initialAmount')::numeric,
                 coalesce(r.n - (h.a->'amount'->'createdAt'->>'number')::bigint, 0)
                 * (h.a->'amount'->'ratePerRound'->>'rate')::numeric)
    FROM h CROSS JOIN r
    WHERE party IS NULL OR h.a->>'owner' = party
    ORDER BY 1, 2
$$;
