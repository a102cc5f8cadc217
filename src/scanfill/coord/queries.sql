-- Every statement on scanfill's coordination tables (backfill_*), each named and described, run by
-- coord.store.Store. Nothing else in scanfill writes these tables. `{s}` is the schema (quoted);
-- parameters are named (%(name)s). Leases are the same for time slices and import cursors: a claim
-- bumps lease_epoch, commits check it under a row lock, a heartbeat renews both kinds.

-- name: range_get
-- A range as recorded, locked while the plan extends it.
SELECT max_text, source_complete, min_text, followed_after FROM {s}.backfill_ranges
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s FOR UPDATE;

-- name: plan_row_wait
-- After the plan lock: how long planning waits for a range row another transaction holds. Only a
-- follower's commit holds one; frozen in its COPY (which the server never times out) it would hold
-- the row, and planning the plan lock, until reaped, and the reaper starts after planning.
SELECT set_config('lock_timeout', %(wait)s, true);

-- name: range_insert
-- A (migration, synchronizer) range as a scan announced it: what its slices must cover.
INSERT INTO {s}.backfill_ranges (migration_id, synchronizer_id, min_time, max_time, min_text, max_text, source_complete)
VALUES (%(m)s, %(sync)s, %(min_time)s, %(max_time)s, %(min_text)s, %(max_text)s, %(complete)s);

-- name: range_extend
-- A range that grew at either end (the active migration's top; a complete scan's earlier bottom).
UPDATE {s}.backfill_ranges SET min_time = %(min_time)s, min_text = %(min_text)s, max_time = %(max_time)s,
       max_text = %(max_text)s
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s;

-- name: range_proven
-- A scan reporting a complete history now vouches for this range.
UPDATE {s}.backfill_ranges SET source_complete = true WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s;

-- name: ranges_all
-- Every range (refetch and coverage checks walk them).
SELECT migration_id, synchronizer_id, min_text, max_text FROM {s}.backfill_ranges ORDER BY 1, 2;

-- name: slot_next
-- The next free slot number (the static WORKER_ID/WORKER_COUNT partition is by slot).
SELECT coalesce(max(slot) + 1, 0) FROM {s}.backfill_cursors;

-- name: slice_insert
-- A new slice [min_time, max_time) whose cursor starts at its top.
INSERT INTO {s}.backfill_cursors (cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before, slot)
VALUES (%(name)s, %(m)s, %(sync)s, %(min_time)s, %(max_time)s, %(last_before)s, %(slot)s) ON CONFLICT DO NOTHING;

-- name: slice_claim
-- The largest open slice of this worker's share whose lease is free, expired, or held by a worker
-- known to be dead; the claim bumps the epoch, which fences the previous holder's commits.
WITH c AS (
    SELECT cursor_name, lease_owner AS prev FROM {s}.backfill_cursors
    WHERE NOT complete AND (lease_owner IS NULL OR lease_until < now() OR lease_owner = ANY(%(dead)s))
      AND (%(count)s <= 1 OR mod(slot, %(count)s) = %(index)s)
      AND (cardinality(%(migrations)s::bigint[]) = 0 OR migration_id = ANY(%(migrations)s::bigint[]))
      AND NOT (cursor_name = ANY(%(exclude)s))
    ORDER BY max_time - min_time DESC, cursor_name
    LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE {s}.backfill_cursors s SET lease_owner = %(owner)s, lease_epoch = s.lease_epoch + 1,
       lease_until = now() + make_interval(secs => %(lease_s)s)
FROM c WHERE s.cursor_name = c.cursor_name
RETURNING s.cursor_name, s.migration_id, s.synchronizer_id, s.min_time, s.max_time, s.last_before, s.lease_epoch, c.prev;

-- name: slice_split_victim
-- The slice another worker holds with the most left to load below its cursor (long enough to halve).
SELECT cursor_name, migration_id, synchronizer_id, min_time, last_before, slot FROM {s}.backfill_cursors
WHERE NOT complete AND lease_owner IS NOT NULL AND lease_owner <> %(owner)s
  AND (%(count)s <= 1 OR mod(slot, %(count)s) = %(index)s)
  AND (cardinality(%(migrations)s::bigint[]) = 0 OR migration_id = ANY(%(migrations)s::bigint[]))
  AND NOT (cursor_name = ANY(%(exclude)s))
  AND last_before::timestamptz - min_time > make_interval(secs => %(min_s)s)
ORDER BY last_before::timestamptz - min_time DESC
LIMIT 1 FOR UPDATE SKIP LOCKED;

-- name: slice_raise_floor
-- The victim of a split keeps the newer half: its lower bound moves up (its commit drops older rows).
UPDATE {s}.backfill_cursors SET min_time = %(min_time)s WHERE cursor_name = %(name)s;

-- name: slice_insert_split
-- The older half of a split, leased at once to the worker that split it.
INSERT INTO {s}.backfill_cursors (cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before, slot,
                                  lease_owner, lease_until, lease_epoch, split_from)
VALUES (%(name)s, %(m)s, %(sync)s, %(min_time)s, %(max_time)s, %(last_before)s, %(slot)s, %(owner)s,
        now() + make_interval(secs => %(lease_s)s), 1, %(victim)s)
ON CONFLICT DO NOTHING
RETURNING cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before, lease_epoch, NULL;

-- name: slice_release
-- Give a slice back (only if this lease still holds it).
UPDATE {s}.backfill_cursors SET lease_owner = NULL, lease_until = NULL
WHERE cursor_name = %(key)s AND lease_owner = %(owner)s AND lease_epoch = %(epoch)s;

-- name: slice_remaining
-- Open slices of this worker's share, and seconds until the soonest foreign lease expires.
SELECT count(*), extract(epoch FROM min(lease_until) - now()) FROM {s}.backfill_cursors
WHERE NOT complete AND (%(count)s <= 1 OR mod(slot, %(count)s) = %(index)s)
  AND (cardinality(%(migrations)s::bigint[]) = 0 OR migration_id = ANY(%(migrations)s::bigint[]));

-- name: commit_guard
-- The first statement of every commit: this transaction's timeouts. A loader frozen mid-commit
-- (SIGSTOP, a hung host) must not hold its cursor's row lock, or contract rows, forever; and the
-- lock waits that follow are bounded too (a timeout set inside a statement applies only to the
-- statements after it, so it cannot be set by the statement that takes the lock).
SELECT set_config('statement_timeout', %(guard)s, true),
       set_config('idle_in_transaction_session_timeout', %(guard)s, true);

-- name: idle_guard
-- The first statement of every other transaction on these tables: a process frozen inside it (after
-- a claim, before its COMMIT) must not keep the rows it locked, which every other process skips
-- (SKIP LOCKED) and so could never take over.
SELECT set_config('idle_in_transaction_session_timeout', %(idle)s, true);

-- name: slice_lock
-- A slice's cursor locked for a commit (after commit_guard).
SELECT min_time, last_before, lease_owner, lease_epoch, complete
FROM {s}.backfill_cursors WHERE cursor_name = %(key)s FOR UPDATE;

-- name: slice_advance
-- The cursor moves to the committed batch's oldest update, in the batch's transaction.
UPDATE {s}.backfill_cursors SET last_before = %(last_before)s, complete = %(done)s, updated_at = now(),
       updates_loaded = updates_loaded + %(updates)s, events_loaded = events_loaded + %(events)s,
       pages_loaded = pages_loaded + %(pages)s, bytes_loaded = bytes_loaded + %(bytes)s,
       completed_at = CASE WHEN %(done)s THEN now() ELSE NULL END, failed_at = NULL, failure = NULL,
       lease_until = GREATEST(lease_until, now() + make_interval(secs => %(lease_s)s))
WHERE cursor_name = %(key)s;

-- name: slices_renew
-- Heartbeat: every open slice this worker holds lives on.
UPDATE {s}.backfill_cursors SET lease_until = now() + make_interval(secs => %(lease_s)s)
WHERE lease_owner = %(owner)s AND NOT complete;

-- name: imports_renew
-- Heartbeat: every open import cursor this worker holds lives on (an import load may outlast a lease).
UPDATE {s}.backfill_import_cursors SET lease_until = now() + make_interval(secs => %(lease_s)s)
WHERE lease_owner = %(owner)s AND NOT complete;

-- name: range_held
-- Rows of a range's backfilled part (up to where a follower took over; the follower counts the rest)
-- and what its slices say they committed (import rows are not a range's).
WITH r AS (SELECT followed_after::timestamptz AS f FROM {s}.backfill_ranges
           WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s)
SELECT (SELECT count(*) FROM {s}.ledger_updates WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s
          AND kind <> 'import' AND ((SELECT f FROM r) IS NULL OR record_time <= (SELECT f FROM r))),
       (SELECT count(*) FROM {s}.ledger_events e JOIN {s}.ledger_updates u USING (update_id)
          WHERE u.migration_id = %(m)s AND u.synchronizer_id = %(sync)s AND u.kind <> 'import'
          AND ((SELECT f FROM r) IS NULL OR u.record_time <= (SELECT f FROM r))),
       (SELECT coalesce(sum(updates_loaded), 0) FROM {s}.backfill_cursors WHERE migration_id = %(m)s
          AND synchronizer_id = %(sync)s),
       (SELECT coalesce(sum(events_loaded), 0) FROM {s}.backfill_cursors WHERE migration_id = %(m)s
          AND synchronizer_id = %(sync)s);

-- name: window_followed_rows
-- Rows of a window the follower stored (above the range's hand-off point), before a refetch removes them.
SELECT count(*), coalesce(sum(u.event_count), 0) FROM {s}.ledger_updates u
JOIN {s}.backfill_ranges r ON r.migration_id = u.migration_id AND r.synchronizer_id = u.synchronizer_id
WHERE u.migration_id = %(m)s AND u.synchronizer_id = %(sync)s AND u.kind <> 'import'
  AND u.record_time >= %(lo)s AND u.record_time < %(hi)s
  AND r.followed_after IS NOT NULL AND u.record_time > r.followed_after::timestamptz;

-- name: follow_uncount
-- A refetch removed rows the follower had stored: its counters no longer claim them (the refetch slice does).
UPDATE {s}.follow_cursors SET items = items - %(updates)s, rows_events = rows_events - %(events)s
WHERE stream = 'updates';

-- name: window_delete_events
-- The events of a range's window, before a refetch loads it again.
DELETE FROM {s}.ledger_events WHERE update_id IN (
    SELECT update_id FROM {s}.ledger_updates WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s
      AND kind <> 'import' AND record_time >= %(lo)s AND record_time < %(hi)s);

-- name: window_delete_updates
-- The updates of a range's window, before a refetch loads it again.
DELETE FROM {s}.ledger_updates WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s AND kind <> 'import'
  AND record_time >= %(lo)s AND record_time < %(hi)s;

-- name: refetch_absorb
-- Open slices whose unloaded part [min_time, cursor) overlaps a window about to be refetched: they
-- end here (epoch bumped, so a holder's next commit is fenced) and the window grows to take their
-- unloaded part, so no record time is loaded by two slices.
UPDATE {s}.backfill_cursors SET complete = true, completed_at = now(), lease_owner = NULL, lease_until = NULL,
       lease_epoch = lease_epoch + 1, failed_at = NULL, failure = NULL, updated_at = now()
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s AND NOT complete AND min_time < %(hi)s
  AND greatest(min_time, least(max_time, last_before::timestamptz)) > %(lo)s
RETURNING min_time, greatest(min_time, least(max_time, last_before::timestamptz));

-- name: slice_insert_refetch
-- A slice over a refetched window whose counters rebase the range's accounting.
INSERT INTO {s}.backfill_cursors (cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before,
                                  updates_loaded, events_loaded, split_from)
VALUES (%(name)s, %(m)s, %(sync)s, %(min_time)s, %(max_time)s, %(last_before)s, %(updates)s, %(events)s, 'refetch');

-- name: import_insert
-- One import cursor per migration that has import updates.
INSERT INTO {s}.backfill_import_cursors (migration_id) VALUES (%(m)s) ON CONFLICT DO NOTHING;

-- name: import_claim
-- The lowest open import cursor whose lease is free or expired; bumps the epoch like a slice claim.
WITH c AS (SELECT migration_id FROM {s}.backfill_import_cursors
           WHERE NOT complete AND (lease_owner IS NULL OR lease_until < now())
             AND (cardinality(%(migrations)s::bigint[]) = 0 OR migration_id = ANY(%(migrations)s::bigint[]))
           ORDER BY migration_id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE {s}.backfill_import_cursors i SET lease_owner = %(owner)s, lease_epoch = i.lease_epoch + 1,
       lease_until = now() + make_interval(secs => %(lease_s)s)
FROM c WHERE i.migration_id = c.migration_id
RETURNING i.migration_id, i.last_update_id, i.lease_epoch;

-- name: import_release
-- Give an import cursor back (only if this lease still holds it).
UPDATE {s}.backfill_import_cursors SET lease_owner = NULL, lease_until = NULL
WHERE migration_id = %(key)s AND lease_owner = %(owner)s AND lease_epoch = %(epoch)s;

-- name: import_lock
-- An import cursor locked for a commit (after commit_guard, like a slice).
SELECT last_update_id, lease_owner, lease_epoch, complete
FROM {s}.backfill_import_cursors WHERE migration_id = %(key)s FOR UPDATE;

-- name: import_advance
-- The import cursor moves to the last committed update id, in the batch's transaction.
UPDATE {s}.backfill_import_cursors SET last_update_id = %(last)s, complete = %(done)s, updated_at = now(),
       updates_loaded = updates_loaded + %(updates)s, events_loaded = events_loaded + %(events)s,
       lease_until = GREATEST(lease_until, now() + make_interval(secs => %(lease_s)s))
WHERE migration_id = %(key)s;

-- name: imports_open
-- Import cursors not complete yet.
SELECT count(*) FROM {s}.backfill_import_cursors WHERE NOT complete;

-- name: progress
-- The one definition of progress and of "complete": every slice complete, every range taken from a
-- scan reporting complete, every import cursor complete; and the loaders' counters.
SELECT (SELECT count(*) FROM {s}.backfill_cursors),
       (SELECT count(*) FROM {s}.backfill_cursors WHERE complete),
       (SELECT count(*) FROM {s}.backfill_ranges),
       (SELECT count(*) FROM {s}.backfill_ranges WHERE NOT source_complete),
       (SELECT count(*) FROM {s}.backfill_import_cursors WHERE NOT complete),
       (SELECT coalesce(sum(updates_loaded), 0) FROM {s}.backfill_cursors)
         + (SELECT coalesce(sum(updates_loaded), 0) FROM {s}.backfill_import_cursors),
       (SELECT coalesce(sum(events_loaded), 0) FROM {s}.backfill_cursors)
         + (SELECT coalesce(sum(events_loaded), 0) FROM {s}.backfill_import_cursors),
       (SELECT coalesce(sum(bytes_loaded), 0) FROM {s}.backfill_cursors),
       (SELECT coalesce(sum(extract(epoch FROM max_time - min_time)), 0) FROM {s}.backfill_cursors),
       (SELECT coalesce(sum(CASE WHEN complete THEN extract(epoch FROM max_time - min_time)
                ELSE greatest(0, extract(epoch FROM max_time - last_before::timestamptz)) END), 0)
          FROM {s}.backfill_cursors);

-- name: range_progress
-- Per range: its slices done, active and waiting, rows loaded, and the share of its time covered.
SELECT r.migration_id, r.synchronizer_id, r.min_text, r.max_text, r.source_complete,
       count(c.*), count(c.*) FILTER (WHERE c.complete),
       count(c.*) FILTER (WHERE NOT c.complete AND c.lease_until > now()),
       coalesce(sum(c.updates_loaded), 0), coalesce(sum(c.events_loaded), 0),
       coalesce(sum(extract(epoch FROM c.max_time - c.min_time)), 0),
       coalesce(sum(CASE WHEN c.complete THEN extract(epoch FROM c.max_time - c.min_time)
           ELSE greatest(0, extract(epoch FROM c.max_time - c.last_before::timestamptz)) END), 0)
FROM {s}.backfill_ranges r LEFT JOIN {s}.backfill_cursors c USING (migration_id, synchronizer_id)
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2;

-- name: open_slices
-- Slices not complete yet, with their cursors.
SELECT cursor_name, last_before FROM {s}.backfill_cursors WHERE NOT complete ORDER BY 1;

-- name: unproven_ranges
-- Ranges no scan reporting a complete history has vouched for.
SELECT migration_id, synchronizer_id FROM {s}.backfill_ranges WHERE NOT source_complete;

-- name: range_slices
-- The planned slices of one range, in order (refetch slices overlay, they do not tile).
SELECT cursor_name, min_time, max_time FROM {s}.backfill_cursors
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s AND split_from IS DISTINCT FROM 'refetch'
ORDER BY min_time, max_time;

-- name: committed_vs_stored
-- What the loaders (backfill, imports, follower) say they committed against what the tables hold.
SELECT (SELECT coalesce(sum(updates_loaded), 0) FROM {s}.backfill_cursors)
         + (SELECT coalesce(sum(updates_loaded), 0) FROM {s}.backfill_import_cursors)
         + (SELECT coalesce(sum(items), 0) FROM {s}.follow_cursors WHERE stream = 'updates'),
       (SELECT count(*) FROM {s}.ledger_updates),
       (SELECT coalesce(sum(events_loaded), 0) FROM {s}.backfill_cursors)
         + (SELECT coalesce(sum(events_loaded), 0) FROM {s}.backfill_import_cursors)
         + (SELECT coalesce(sum(rows_events), 0) FROM {s}.follow_cursors WHERE stream = 'updates'),
       (SELECT count(*) FROM {s}.ledger_events);

-- name: worker_register
-- This worker is running (again).
INSERT INTO {s}.backfill_workers (worker_id, host, pid, pidns) VALUES (%(id)s, %(host)s, %(pid)s, %(pidns)s)
ON CONFLICT (worker_id) DO UPDATE SET heartbeat = now(), state = 'running', stopped_at = NULL;

-- name: workers_running_here
-- Workers recorded as running on this host (their pids tell whether they still are).
SELECT worker_id, pid, pidns FROM {s}.backfill_workers WHERE host = %(host)s AND state = 'running' AND worker_id <> %(id)s;

-- name: workers_mark_dead
-- Workers whose process is gone: their leases can be taken at once.
UPDATE {s}.backfill_workers SET state = 'dead', stopped_at = now() WHERE worker_id = ANY(%(ids)s);

-- name: worker_stopped
-- This worker ended (done, stopped or failed) with this many rows.
UPDATE {s}.backfill_workers SET state = %(state)s, stopped_at = now(), heartbeat = now(), rows_loaded = %(rows)s
WHERE worker_id = %(id)s;

-- name: worker_heartbeat
-- This worker is alive and has loaded this many rows.
UPDATE {s}.backfill_workers SET heartbeat = now(), rows_loaded = %(rows)s WHERE worker_id = %(id)s;

-- name: progress_sample
-- A point of this worker's progress (status computes rates from these).
INSERT INTO {s}.backfill_progress (worker_id, updates, events, bytes, pages)
VALUES (%(id)s, %(updates)s, %(events)s, %(bytes)s, %(pages)s);

-- name: follow_sample
-- A point of the follower's progress and lag (now - the newest record time it stored), for the report.
INSERT INTO {s}.backfill_progress (worker_id, updates, events, bytes, pages, lag_s)
SELECT %(id)s, %(updates)s, %(events)s, 0, 0, extract(epoch FROM now() - record_time)
FROM {s}.follow_cursors WHERE stream = 'updates';

-- name: lag_samples
-- The follower's lag over time (report).
SELECT sampled_at, lag_s FROM {s}.backfill_progress WHERE lag_s IS NOT NULL ORDER BY sampled_at;

-- name: disagreements_all
-- Every recorded disagreement, newest first (report).
SELECT seen_at, url, request, cardinality(differing_ids) FROM {s}.scan_disagreements ORDER BY seen_at DESC LIMIT 200;

-- name: workers_live
-- Workers with a recent heartbeat, and the leases each holds.
SELECT w.worker_id, w.host, w.pid, w.started_at, w.heartbeat, w.rows_loaded,
       (SELECT count(*) FROM {s}.backfill_cursors c WHERE c.lease_owner = w.worker_id AND NOT c.complete
          AND c.lease_until > now())
FROM {s}.backfill_workers w WHERE w.state = 'running' AND w.heartbeat > now() - make_interval(secs => %(stale_s)s)
ORDER BY w.started_at;

-- name: rates
-- Per worker, its first and last progress samples within the window.
SELECT worker_id, min(sampled_at), max(sampled_at), min(updates + events), max(updates + events)
FROM {s}.backfill_progress WHERE sampled_at > now() - make_interval(secs => %(window_s)s) GROUP BY 1;

-- name: stop_request
-- Ask every worker, wherever it runs, to stop (`scanfill abort`).
INSERT INTO {s}.backfill_control (key, value) VALUES ('stop', 'abort')
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, set_at = now();

-- name: stop_clear
-- Workers may run again.
DELETE FROM {s}.backfill_control WHERE key = 'stop';

-- name: stop_requested
-- Whether an operator asked every worker to stop.
SELECT value FROM {s}.backfill_control WHERE key = 'stop';

-- name: slices_reset
-- After the ledger tables were emptied (UNLOGGED crash, truncate): every slice starts over.
UPDATE {s}.backfill_cursors SET last_before = to_char(max_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       complete = false, completed_at = NULL, updates_loaded = 0, events_loaded = 0, pages_loaded = 0,
       bytes_loaded = 0, lease_owner = NULL, lease_until = NULL, lease_epoch = lease_epoch + 1, updated_at = now();

-- name: imports_reset
-- After the ledger tables were emptied: every import cursor starts over too.
UPDATE {s}.backfill_import_cursors SET last_update_id = '', complete = false, updates_loaded = 0, events_loaded = 0,
       lease_owner = NULL, lease_until = NULL, lease_epoch = lease_epoch + 1, updated_at = now();

-- name: slices_lock_all
-- Serialises the crash reset against commits.
LOCK TABLE {s}.backfill_cursors, {s}.backfill_import_cursors IN EXCLUSIVE MODE;

-- name: truncate_all
-- `abort --truncate`: the ledger and every cursor of every kind, so the next run starts from nothing.
TRUNCATE {s}.ledger_updates, {s}.ledger_events, {s}.contracts, {s}.amulet_transfers, {s}.completeness, {s}.backfill_cursors, {s}.backfill_ranges, {s}.backfill_progress,
         {s}.backfill_import_cursors;

-- name: samples_all
-- Every progress sample, for the report's charts.
SELECT worker_id, sampled_at, updates + events FROM {s}.backfill_progress ORDER BY sampled_at;

-- name: slices_completed
-- When each slice completed and the time it spans, for the report's coverage chart.
SELECT completed_at, extract(epoch FROM max_time - min_time) FROM {s}.backfill_cursors
WHERE completed_at IS NOT NULL ORDER BY completed_at;

-- name: planned_span
-- Seconds of record time the planned slices span (refetch slices overlay them).
SELECT coalesce(sum(extract(epoch FROM max_time - min_time)), 0) FROM {s}.backfill_cursors
WHERE split_from IS DISTINCT FROM 'refetch';

-- name: follow_claim
-- The follower lease: free, expired, or held by a follower known dead; the claim bumps the epoch.
-- SKIP LOCKED: a frozen follower's commit holds the row (FOR SHARE); the standby must not wait on it
-- (it reaps that commit meanwhile, see reap_frozen_commits).
UPDATE {s}.follow_leader l SET owner = %(owner)s, host = %(host)s, pid = %(pid)s, pidns = %(pidns)s,
       lease_epoch = l.lease_epoch + 1, lease_until = now() + make_interval(secs => %(lease_s)s), since = now(),
       heartbeat = now(), problems = 0, last_problem = NULL, last_problem_at = NULL
FROM (SELECT owner AS prev FROM {s}.follow_leader WHERE id = 1 FOR UPDATE SKIP LOCKED) p
WHERE l.id = 1 AND (l.owner IS NULL OR l.lease_until < now() OR l.owner = ANY(%(dead)s) OR l.owner = %(owner)s)
RETURNING l.lease_epoch, p.prev;

-- name: follow_renew
-- The active follower's heartbeat (nothing when its lease was taken over).
UPDATE {s}.follow_leader SET lease_until = now() + make_interval(secs => %(lease_s)s), heartbeat = now(),
       updates_loaded = %(updates)s, events_loaded = %(events)s, problems = %(problems)s,
       last_problem = coalesce(%(last_problem)s, last_problem),
       last_problem_at = CASE WHEN %(last_problem)s IS NULL THEN last_problem_at ELSE now() END
WHERE id = 1 AND owner = %(owner)s AND lease_epoch = %(epoch)s;

-- name: follow_release
-- The active follower steps down (a standby takes over at once).
UPDATE {s}.follow_leader SET owner = NULL, lease_until = NULL WHERE id = 1 AND owner = %(owner)s
  AND lease_epoch = %(epoch)s;

-- name: follow_fence
-- In a follower's commit: the lease still held by this follower at this epoch (shared: both streams commit).
SELECT owner, lease_epoch FROM {s}.follow_leader WHERE id = 1 FOR SHARE;

-- name: follow_leader_here
-- The follower recorded as active on this host (its pid tells whether it still runs).
SELECT owner, pid, pidns FROM {s}.follow_leader WHERE id = 1 AND host = %(host)s AND owner IS NOT NULL AND owner <> %(id)s;

-- name: follow_position
-- A stream's cursor: the (migration, record time) of the last item it committed.
SELECT migration_id, record_text FROM {s}.follow_cursors WHERE stream = %(stream)s;

-- name: follow_position_set
-- A stream's cursor moves, in the transaction of the page it committed.
INSERT INTO {s}.follow_cursors (stream, migration_id, record_text, record_time, items, rows_events)
VALUES (%(stream)s, %(m)s, %(text)s, %(time)s, %(items)s, %(events)s)
ON CONFLICT (stream) DO UPDATE SET migration_id = EXCLUDED.migration_id, record_text = EXCLUDED.record_text,
       record_time = EXCLUDED.record_time, items = {s}.follow_cursors.items + EXCLUDED.items,
       rows_events = {s}.follow_cursors.rows_events + EXCLUDED.rows_events, updated_at = now();

-- name: backfill_frontier
-- Where following starts after a backfill: the newest migration's lowest range top.
SELECT migration_id, min_text FROM (
    SELECT migration_id, max_text AS min_text, max_time FROM {s}.backfill_ranges
    WHERE migration_id = (SELECT max(migration_id) FROM {s}.backfill_ranges)
    ORDER BY max_time LIMIT 1) f;

-- name: range_lock_follow
-- A range in a follower's commit: locked, with what the backfill and the follower own of it.
SELECT max_text, followed_after, min_text FROM {s}.backfill_ranges
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s FOR UPDATE;

-- name: range_insert_pending
-- A range the follower found first (a new migration or synchronizer), created before the commit of
-- its first page: empty, and nobody's until that commit makes all of it the follower's
-- (range_follow_to). Should that commit never come, planning treats it as any range of the backfill.
INSERT INTO {s}.backfill_ranges (migration_id, synchronizer_id, min_time, max_time, min_text, max_text,
                                 source_complete)
VALUES (%(m)s, %(sync)s, %(min_time)s, %(min_time)s, %(min_text)s, %(before_min)s, true);

-- name: range_insert_followed
-- A range the follower found first (a new migration or synchronizer): all of it is the follower's.
INSERT INTO {s}.backfill_ranges (migration_id, synchronizer_id, min_time, max_time, min_text, max_text,
                                 source_complete, followed_after)
VALUES (%(m)s, %(sync)s, %(min_time)s, %(min_time)s, %(min_text)s, %(before_min)s, true, %(before_min)s);

-- name: range_follow_to
-- The follower stored up to here; the first time, the hand-off point is recorded.
UPDATE {s}.backfill_ranges SET max_text = %(max_text)s, max_time = %(max_time)s,
       followed_after = coalesce(followed_after, max_text)
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s;

-- name: scan_events_known
-- Which of a page's update ids already have their events stored (the re-read boundary microsecond).
SELECT update_id FROM {s}.scan_events WHERE update_id = ANY(%(ids)s);

-- name: follow_state
-- What status shows of the follower: who, since when, its cursors and counters.
SELECT l.owner, l.host, l.pid, l.since, l.heartbeat, l.lease_until > now(), l.updates_loaded, l.events_loaded,
       u.migration_id, u.record_text, u.record_time, u.items, e.record_text, e.items,
       (SELECT count(*) FROM {s}.scan_events), l.problems, l.last_problem, l.last_problem_at
FROM {s}.follow_leader l
LEFT JOIN {s}.follow_cursors u ON u.stream = 'updates'
LEFT JOIN {s}.follow_cursors e ON e.stream = 'events'
WHERE l.id = 1;

-- name: follow_reset
-- After the ledger tables were emptied: the followed parts of every range are to be followed again.
UPDATE {s}.follow_cursors SET (migration_id, record_text, record_time) = (
    SELECT migration_id, followed_after, followed_after::timestamptz FROM {s}.backfill_ranges
    WHERE followed_after IS NOT NULL ORDER BY migration_id, followed_after::timestamptz LIMIT 1), updated_at = now(),
    items = 0, rows_events = 0
WHERE stream = 'updates' AND EXISTS (SELECT 1 FROM {s}.backfill_ranges WHERE followed_after IS NOT NULL);

-- name: ranges_unfollow
-- After the ledger tables were emptied: each range's top goes back to where the follower took over.
UPDATE {s}.backfill_ranges SET max_text = followed_after, max_time = followed_after::timestamptz
WHERE followed_after IS NOT NULL;

-- name: follow_forget_updates
-- `abort --truncate`: the updates stream starts over (the events stream keeps its cursor and rows).
DELETE FROM {s}.follow_cursors WHERE stream = 'updates';

-- name: ranges_coverage
-- Each range and where its slices must end: at its top, or where the follower took over.
SELECT migration_id, synchronizer_id, min_text, coalesce(followed_after, max_text), followed_after IS NOT NULL
FROM {s}.backfill_ranges ORDER BY 1, 2;

-- name: unlogged_armed
-- Whether the UNLOGGED canary table exists and the ledger tables are UNLOGGED (bulk-load mode).
SELECT to_regclass(%(canary)s) IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_class WHERE oid IN (to_regclass(%(updates)s), to_regclass(%(events)s))
               AND relpersistence = 'u');

-- name: canary_rows
-- The canary's rows: crash recovery empties it together with the UNLOGGED ledger tables.
SELECT count(*) FROM {s}.scanfill_unlogged_canary;

-- name: disagreement_insert
-- A scan served a page the agreeing scans did not: which request, which updates.
INSERT INTO {s}.scan_disagreements (url, request, differing_ids) VALUES (%(url)s, %(request)s, %(ids)s);

-- name: disagreements_by_scan
-- Per scan: how many of its pages disagreed with the others, and when last.
SELECT url, count(*), max(seen_at), sum(cardinality(differing_ids)) FROM {s}.scan_disagreements GROUP BY 1 ORDER BY 2 DESC;

-- name: reap_frozen_commits
-- End commits of frozen loaders: a COPY waiting for data from a client that stopped (SIGSTOP, a
-- hung host) is not ended by its statement timeout (the server only checks it when data comes),
-- and it holds its slice's row lock. Those older than the guard timeout are terminated.
SELECT pid, application_name, pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'scanfill %%'
  AND state = 'active' AND wait_event = 'ClientRead' AND query LIKE 'COPY %%'
  AND now() - query_start > make_interval(secs => %(guard_s)s);

-- name: ledger_truncate
-- After a crash emptied the UNLOGGED tables: whatever was written since goes too (the cursors start
-- over), and so do the logged tables that describe those rows (the day ledger, the transfer facts),
-- which crash recovery leaves: the reload counts and writes them again.
TRUNCATE {s}.ledger_updates, {s}.ledger_events, {s}.contracts, {s}.amulet_transfers, {s}.completeness;

-- name: canary_arm
-- The canary row that crash recovery empties together with the UNLOGGED ledger tables.
INSERT INTO {s}.scanfill_unlogged_canary VALUES (true);

-- name: ranges_missing
-- How many of these (migration, synchronizer) pairs have no range yet, in one round trip (no lock: a
-- follower that finds one missing takes plan_lock before it locks any range row).
SELECT count(*) FROM unnest(%(ms)s::bigint[], %(syncs)s::text[]) k(m, sync)
WHERE NOT EXISTS (SELECT 1 FROM {s}.backfill_ranges r WHERE r.migration_id = k.m AND r.synchronizer_id = k.sync);

-- name: plan_lock
-- Ranges are created under this lock, by planning and by a follower that finds a new range alike.
SELECT pg_advisory_xact_lock(%(key)s);

-- name: follower_active
-- The follower holding an unexpired lease, if any (prepare refuses, abort waits for it).
SELECT owner FROM {s}.follow_leader WHERE id = 1 AND owner IS NOT NULL AND lease_until > now();

-- name: follow_positions
-- Both streams' cursors (doctor checks that some scan can serve them).
SELECT stream, migration_id, record_text FROM {s}.follow_cursors ORDER BY stream;

-- name: range_migrations
-- Every migration the ranges know of.
SELECT DISTINCT migration_id FROM {s}.backfill_ranges ORDER BY 1;

-- name: rewind_count
-- Rows of a migration past a point (all of it: '-infinity'), before `follow --rewind` removes them.
SELECT count(*), coalesce(sum(event_count), 0) FROM {s}.ledger_updates
WHERE migration_id = %(m)s AND record_time > %(after)s AND kind <> 'import';

-- name: rewind_events
DELETE FROM {s}.ledger_events WHERE update_id IN (SELECT update_id FROM {s}.ledger_updates
    WHERE migration_id = %(m)s AND record_time > %(after)s AND kind <> 'import');

-- name: rewind_updates
DELETE FROM {s}.ledger_updates WHERE migration_id = %(m)s AND record_time > %(after)s AND kind <> 'import';

-- name: rewind_scan_events
DELETE FROM {s}.scan_events WHERE migration_id = %(m)s AND record_time > %(after)s;

-- name: rewind_drop_migration
-- A migration no scan announces: its ranges and slices go (what they held was removed above).
WITH c AS (DELETE FROM {s}.backfill_cursors WHERE migration_id = %(m)s)
DELETE FROM {s}.backfill_ranges WHERE migration_id = %(m)s;

-- name: rewind_ranges
-- A migration's followed ranges end again at the newest update stored (after rows past its head went).
UPDATE {s}.backfill_ranges r SET max_time = t.top,
       max_text = to_char(t.top AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM (SELECT r2.synchronizer_id, greatest(r2.min_time - interval '1 microsecond',
             (SELECT max(record_time) FROM {s}.ledger_updates u WHERE u.migration_id = r2.migration_id
                AND u.synchronizer_id = r2.synchronizer_id AND u.kind <> 'import')) AS top
      FROM {s}.backfill_ranges r2 WHERE r2.migration_id = %(m)s) t
WHERE r.migration_id = %(m)s AND r.synchronizer_id = t.synchronizer_id AND r.max_time > %(after)s
  AND r.followed_after IS NOT NULL;

-- name: ranges_top
-- The newest position any range reaches: a safe cursor for the updates stream (what is below is stored).
SELECT migration_id, max_text FROM {s}.backfill_ranges ORDER BY migration_id DESC, max_time DESC LIMIT 1;

-- name: scan_events_top
-- The newest events item stored: a safe cursor for the events stream (items are kept by update id).
SELECT migration_id, record_time FROM {s}.scan_events ORDER BY migration_id DESC, record_time DESC LIMIT 1;

-- name: scan_events_vs_committed
-- The /v0/events rows the follower says it committed (verdict-only items too) against what scan_events holds.
SELECT (SELECT coalesce(sum(items), 0) FROM {s}.follow_cursors WHERE stream = 'events'),
       (SELECT count(*) FROM {s}.scan_events);

-- name: follow_uncount_scan_events
-- `follow --rewind` removed events rows: the events stream no longer claims them.
UPDATE {s}.follow_cursors SET items = items - %(n)s WHERE stream = 'events';

-- name: contracts_stale
-- A load without contract state (`--no-contract-state`): `contracts` misses what it stores until
-- `scanfill rebuild-state`; verify says so.
INSERT INTO {s}.scanfill_meta VALUES ('contracts_stale', %(reason)s) ON CONFLICT (key) DO NOTHING;

-- ----- the completeness ledger (completeness.sql reads it) ---------------------------------------

-- name: days_add
-- A commit's updates per (migration, synchronizer, UTC day), in the commit's transaction; keys
-- sorted, so concurrent commits lock day rows in one order. Last in the commit: held briefly.
INSERT INTO {s}.completeness AS c (migration_id, synchronizer_id, day, updates, events, first_record_time,
                                   last_record_time, sources, agreed_by)
SELECT k.m, k.sync, k.day, k.u, k.e, k.first, k.last, ARRAY[%(source)s]::text[], %(agreed)s
FROM unnest(%(m)s::bigint[], %(sync)s::text[], %(day)s::date[], %(u)s::bigint[], %(e)s::bigint[],
            %(first)s::timestamptz[], %(last)s::timestamptz[]) AS k(m, sync, day, u, e, first, last)
ON CONFLICT (migration_id, synchronizer_id, day) DO UPDATE SET updates = c.updates + EXCLUDED.updates,
       events = c.events + EXCLUDED.events,
       first_record_time = least(c.first_record_time, EXCLUDED.first_record_time),
       last_record_time = greatest(c.last_record_time, EXCLUDED.last_record_time),
       sources = CASE WHEN %(source)s = ANY(c.sources) THEN c.sources ELSE c.sources || %(source)s::text END,
       agreed_by = least(c.agreed_by, EXCLUDED.agreed_by), updated_at = now();

-- name: days_zero
-- Before counting days again: what they held is forgotten (a day left empty stays, at zero).
UPDATE {s}.completeness SET updates = 0, events = 0, first_record_time = NULL, last_record_time = NULL,
       updated_at = now()
WHERE %(m)s::bigint IS NULL OR (migration_id = %(m)s AND synchronizer_id = %(sync)s AND day >= %(lo)s::date
      AND day <= %(hi)s::date);

-- name: days_count
-- The days within the same optional bounds counted again from the ledger tables: the repairs that
-- remove rows (--refetch, follow --rewind, restore's dedupe) and the v9 upgrade, after days_zero.
INSERT INTO {s}.completeness AS c (migration_id, synchronizer_id, day, updates, events, first_record_time,
                                   last_record_time, sources)
SELECT coalesce(u.migration_id, e.migration_id), coalesce(u.synchronizer_id, e.synchronizer_id),
       coalesce(u.day, e.day), coalesce(u.n, 0), coalesce(e.n, 0), u.first, u.last, ARRAY[%(source)s]::text[]
FROM (SELECT migration_id, synchronizer_id, (record_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n,
             min(record_time) AS first, max(record_time) AS last
      FROM {s}.ledger_updates
      WHERE kind <> 'import' AND (%(m)s::bigint IS NULL OR migration_id = %(m)s) AND (%(sync)s::text IS NULL OR synchronizer_id = %(sync)s)
        AND (%(lo)s::date IS NULL OR record_time >= %(lo)s::date::timestamp AT TIME ZONE 'UTC')
        AND (%(hi)s::date IS NULL OR record_time < (%(hi)s::date + 1)::timestamp AT TIME ZONE 'UTC')
      GROUP BY 1, 2, 3) u
FULL JOIN (SELECT e.migration_id, e.synchronizer_id, (e.record_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n
           FROM {s}.ledger_events e
           WHERE e.record_time > '0002-01-01' AND (%(m)s::bigint IS NULL OR e.migration_id = %(m)s) AND (%(sync)s::text IS NULL OR e.synchronizer_id = %(sync)s)
        AND (%(lo)s::date IS NULL OR e.record_time >= %(lo)s::date::timestamp AT TIME ZONE 'UTC')
        AND (%(hi)s::date IS NULL OR e.record_time < (%(hi)s::date + 1)::timestamp AT TIME ZONE 'UTC')
           GROUP BY 1, 2, 3) e
  ON e.migration_id = u.migration_id AND e.synchronizer_id = u.synchronizer_id AND e.day = u.day
ON CONFLICT (migration_id, synchronizer_id, day) DO UPDATE SET updates = EXCLUDED.updates, events = EXCLUDED.events,
       first_record_time = EXCLUDED.first_record_time, last_record_time = EXCLUDED.last_record_time,
       updated_at = now();

-- name: days_ledger
-- The ledger as the loaders kept it, for verify to compare with an independent count.
SELECT migration_id, synchronizer_id, day, updates, events FROM {s}.completeness WHERE updates > 0 OR events > 0;

-- name: days_counted
-- An independent count of the ledger tables per (migration, synchronizer, UTC day) (verify).
SELECT coalesce(u.migration_id, e.migration_id), coalesce(u.synchronizer_id, e.synchronizer_id),
       coalesce(u.day, e.day), coalesce(u.n, 0), coalesce(e.n, 0)
FROM (SELECT migration_id, synchronizer_id, (record_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n
      FROM {s}.ledger_updates WHERE kind <> 'import' GROUP BY 1, 2, 3) u
FULL JOIN (SELECT migration_id, synchronizer_id, (record_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n
           FROM {s}.ledger_events WHERE record_time > '0002-01-01' GROUP BY 1, 2, 3) e
  ON e.migration_id = u.migration_id AND e.synchronizer_id = u.synchronizer_id AND e.day = u.day;

-- name: days_verified
-- What `verify --against-scan --days` found for a day: the scans that serve exactly the stored copy.
-- A scan serving exactly that copy vouches for the day: an earlier finding on it is cleared.
UPDATE {s}.completeness SET verified_at = now(), verified_by = %(by)s, verified_digest = %(digest)s,
       verified_updates = %(updates)s,
       finding = CASE WHEN cardinality(%(by)s::text[]) > 0 THEN NULL ELSE finding END,
       repair = CASE WHEN cardinality(%(by)s::text[]) > 0 THEN NULL ELSE repair END,
       found_at = CASE WHEN cardinality(%(by)s::text[]) > 0 THEN NULL ELSE found_at END,
       expected_updates = CASE WHEN cardinality(%(by)s::text[]) > 0 THEN NULL ELSE expected_updates END,
       expected_events = CASE WHEN cardinality(%(by)s::text[]) > 0 THEN NULL ELSE expected_events END
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s AND day = %(day)s;

-- name: days_found
-- `verify` proved a day's copy wrong: why, and the command that repairs it. The day is a gap (and
-- the watermark stops before it) until a refetch covering it or a scan vouching for it clears this,
-- or, for counts, the tables holding again what the loaders committed (`expected_*`: the first
-- finding's, kept while the day stays wrong).
INSERT INTO {s}.completeness AS c (migration_id, synchronizer_id, day, finding, repair, found_at, expected_updates,
                                   expected_events)
VALUES (%(m)s, %(sync)s, %(day)s, %(finding)s, %(repair)s, now(), %(eu)s, %(ee)s)
ON CONFLICT (migration_id, synchronizer_id, day) DO UPDATE SET finding = EXCLUDED.finding,
       repair = EXCLUDED.repair, found_at = now(), updated_at = now(),
       expected_updates = CASE WHEN c.finding IS NULL THEN EXCLUDED.expected_updates ELSE c.expected_updates END,
       expected_events = CASE WHEN c.finding IS NULL THEN EXCLUDED.expected_events ELSE c.expected_events END;

-- name: days_settled
-- Days whose tables hold again exactly what the loaders committed before rows went (a refetch of
-- the part that was lost, or rows put back): their counts finding is cleared.
UPDATE {s}.completeness c SET finding = NULL, repair = NULL, found_at = NULL, expected_updates = NULL,
       expected_events = NULL, updated_at = now()
FROM unnest(%(m)s::bigint[], %(sync)s::text[], %(day)s::date[], %(u)s::bigint[], %(e)s::bigint[]) AS k(m, sync, day, u, e)
WHERE c.finding IS NOT NULL AND c.migration_id = k.m AND c.synchronizer_id = k.sync AND c.day = k.day
  AND c.expected_updates = k.u AND c.expected_events = k.e;

-- name: days_repaired
-- A repair reloads [lo, hi) of migration m, synchronizer sync (each bound optional): the findings of
-- the days it covers whole (as far as their range reaches) are cleared; the reload counts them again.
UPDATE {s}.completeness c SET finding = NULL, repair = NULL, found_at = NULL, expected_updates = NULL,
       expected_events = NULL, updated_at = now()
FROM {s}.backfill_ranges r
WHERE c.finding IS NOT NULL AND r.migration_id = c.migration_id AND r.synchronizer_id = c.synchronizer_id
  AND (%(m)s::bigint IS NULL OR c.migration_id = %(m)s) AND (%(sync)s::text IS NULL OR c.synchronizer_id = %(sync)s)
  AND (%(lo)s::timestamptz IS NULL
       OR %(lo)s::timestamptz <= greatest(c.day::timestamp AT TIME ZONE 'UTC', r.min_time))
  AND (%(hi)s::timestamptz IS NULL
       OR %(hi)s::timestamptz >= least((c.day + 1)::timestamp AT TIME ZONE 'UTC', r.max_time + interval '1 microsecond'));

-- name: days_vouched
-- A scan serves exactly the stored copy of a day (`verify --against-scan`): its finding is cleared.
UPDATE {s}.completeness SET finding = NULL, repair = NULL, found_at = NULL, expected_updates = NULL,
       expected_events = NULL, updated_at = now()
WHERE migration_id = %(m)s AND synchronizer_id = %(sync)s AND day = %(day)s AND finding IS NOT NULL;

-- name: days_findings
-- The days `verify` proved wrong and no repair has reloaded since (verify fails while any is open).
SELECT migration_id, synchronizer_id, day, finding, repair, found_at FROM {s}.completeness
WHERE finding IS NOT NULL ORDER BY day, migration_id, synchronizer_id;

-- name: days_verified_new
-- The same for a day the ledger has no row for (a quiet day: nothing stored, and the scans agree).
INSERT INTO {s}.completeness (migration_id, synchronizer_id, day, verified_at, verified_by, verified_digest,
                              verified_updates)
VALUES (%(m)s, %(sync)s, %(day)s, now(), %(by)s, %(digest)s, %(updates)s)
ON CONFLICT (migration_id, synchronizer_id, day) DO NOTHING;

-- name: days
-- Every day's status and figures (completeness.sql), optionally between two days.
SELECT * FROM {s}.completeness_days(%(from_day)s::date, %(to_day)s::date);

-- name: days_by_status
-- How many (migration, synchronizer, day) rows have each status (status).
SELECT status, count(*) FROM {s}.completeness_days() GROUP BY 1;

-- name: complete_through
-- The watermark (completeness.sql).
SELECT migration_id, record_time, ledger_position FROM {s}.complete_through();

-- name: slice_failed
-- A worker gave up on a slice (what it could not get past): the slice's days are a gap, with why,
-- until a commit on it clears this.
UPDATE {s}.backfill_cursors SET failed_at = now(), failure = %(why)s WHERE cursor_name = %(key)s;

-- name: failed_slices
-- The slices workers gave up on and why (status shows them; a commit on one clears it).
SELECT cursor_name, migration_id, synchronizer_id, failed_at, failure FROM {s}.backfill_cursors
WHERE failure IS NOT NULL AND NOT complete ORDER BY failed_at, cursor_name;

-- name: follow_failed
-- The follower stopped on a page it cannot store and cannot skip: why, for status ("stopped: ...").
UPDATE {s}.follow_leader SET last_problem = 'stopped: ' || %(why)s, last_problem_at = now()
WHERE id = 1 AND owner = %(owner)s AND lease_epoch = %(epoch)s;

-- ----- exports to a lake (lake.export) ----------------------------------------------------------

-- name: export_lock
-- One exporter per target at a time, not waited for (a second export says another is running).
-- Transaction-scoped after idle_guard, like publish_lock: a frozen exporter loses it within seconds.
SELECT pg_try_advisory_xact_lock(%(key)s);

-- name: publish_lock
-- A lake's writer lock (publish, compaction, vacuum), waited for: a commit whose files another
-- publisher did not take publishes them itself right after, so nothing committed stays invisible
-- until the next commit. Transaction-scoped, after idle_guard: a holder frozen while holding it
-- (SIGSTOP, a paused VM) leaves its transaction idle, and the server ends it within the guard; a
-- live holder keeps it with lock_alive.
SELECT pg_advisory_xact_lock(%(key)s);

-- name: lock_alive
-- A live lock holder's keep-alive on its lock's connection (resets the idle guard's clock).
SELECT 1;

-- name: export_partitions
-- The (migration, UTC day) partitions whose stored rows changed since they were last exported to
-- this target: the completeness ledger's counts and last change per day (over synchronizers), and
-- each migration's import updates (day 0001-01-01) by count.
WITH src AS (
    SELECT migration_id, day, sum(updates)::bigint AS u, sum(events)::bigint AS e, max(updated_at)::text AS at
    FROM {s}.completeness GROUP BY 1, 2
    UNION ALL
    SELECT migration_id, DATE '0001-01-01', count(*), coalesce(sum(event_count), 0)::bigint, NULL
    FROM {s}.ledger_updates WHERE kind = 'import' GROUP BY 1)
SELECT s.migration_id, s.day, s.u, s.e, concat_ws(':', s.u, s.e, s.at)
FROM src s LEFT JOIN {s}.lake_exports x ON x.target = %(target)s AND x.migration_id = s.migration_id AND x.day = s.day
WHERE x.source_mark IS DISTINCT FROM concat_ws(':', s.u, s.e, s.at) AND (s.u > 0 OR s.e > 0 OR x.day IS NOT NULL)
ORDER BY 1, 2;

-- name: export_source
-- Rows stored per (migration, UTC day) partition, as exports count them (verify --lake).
SELECT migration_id, day, sum(updates), sum(events) FROM {s}.completeness GROUP BY 1, 2 HAVING sum(updates) + sum(events) > 0
UNION ALL
SELECT migration_id, DATE '0001-01-01', updates_loaded, events_loaded FROM {s}.backfill_import_cursors
WHERE updates_loaded > 0;

-- name: export_gone
-- Partitions exported to this target whose rows are no longer stored at all (a truncated copy).
SELECT x.migration_id, x.day FROM {s}.lake_exports x
WHERE x.target = %(target)s AND x.day <> DATE '0001-01-01'
  AND NOT EXISTS (SELECT 1 FROM {s}.completeness c WHERE c.migration_id = x.migration_id AND c.day = x.day)
UNION ALL
SELECT x.migration_id, x.day FROM {s}.lake_exports x
WHERE x.target = %(target)s AND x.day = DATE '0001-01-01'
  AND NOT EXISTS (SELECT 1 FROM {s}.ledger_updates u WHERE u.migration_id = x.migration_id AND u.kind = 'import');

-- name: export_done
-- A partition written to the lake (after its Delta commit).
INSERT INTO {s}.lake_exports (target, migration_id, day, source_mark, updates, events, delta_version)
VALUES (%(target)s, %(m)s, %(day)s, %(mark)s, %(u)s, %(e)s, %(version)s)
ON CONFLICT (target, migration_id, day) DO UPDATE SET source_mark = EXCLUDED.source_mark,
       updates = EXCLUDED.updates, events = EXCLUDED.events, delta_version = EXCLUDED.delta_version,
       exported_at = now();

-- name: export_forget
-- A partition removed from the lake.
DELETE FROM {s}.lake_exports WHERE target = %(target)s AND migration_id = %(m)s AND day = %(day)s;

-- name: export_state
-- What was exported to this target (verify --lake).
SELECT migration_id, day, updates, events, delta_version, exported_at FROM {s}.lake_exports
WHERE target = %(target)s ORDER BY 1, 2;

-- name: ledger_tables_empty
-- Whether the ledger tables hold no row at all (a database loaded with `run --lake`, or emptied):
-- an export from them would replace a lake's partitions with nothing.
SELECT NOT EXISTS (SELECT 1 FROM {s}.ledger_updates) AND NOT EXISTS (SELECT 1 FROM {s}.ledger_events);

-- name: export_contracts_forget
-- The contract state of a target written again by the next export (its Delta tables are gone).
DELETE FROM {s}.scanfill_meta WHERE key = 'lake_export_contracts ' || %(target)s;

-- name: lake_names
-- Every name a lake's bookkeeping is recorded under (an older release kept the spelling it was given).
SELECT target FROM {s}.lake_files UNION SELECT target FROM {s}.lake_exports
UNION SELECT substr(key, 23) FROM {s}.scanfill_meta WHERE key LIKE 'lake\_export\_contracts %%';

-- name: lake_rename
-- A lake's bookkeeping moved from a spelling to its canonical name, in one statement; an export
-- record the canonical name already has for the partition wins.
WITH f AS (UPDATE {s}.lake_files SET target = %(new)s WHERE target = %(old)s RETURNING 1),
x AS (DELETE FROM {s}.lake_exports o WHERE o.target = %(old)s RETURNING o.*),
xi AS (INSERT INTO {s}.lake_exports (target, migration_id, day, source_mark, updates, events, delta_version, exported_at)
       SELECT %(new)s, migration_id, day, source_mark, updates, events, delta_version, exported_at FROM x
       ON CONFLICT (target, migration_id, day) DO NOTHING RETURNING 1),
m AS (DELETE FROM {s}.scanfill_meta WHERE key = 'lake_export_contracts ' || %(old)s RETURNING value),
mi AS (INSERT INTO {s}.scanfill_meta (key, value) SELECT 'lake_export_contracts ' || %(new)s, value FROM m
       ON CONFLICT (key) DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM f) + (SELECT count(*) FROM x) + (SELECT count(*) FROM m);

-- ----- run --lake: files staged by commits, published to the Delta log (lake.sink) -----------------

-- name: lake_stage_shared
-- Inside a commit, before it writes a file: vacuum (lake_stage_drain) waits for every such commit.
SELECT pg_advisory_xact_lock_shared(%(key)s);

-- name: lake_stage_drain
-- Vacuum, after listing the files no version references: every commit that was writing files then
-- has ended (committed: its files are in lake_files; rolled back: they are orphans).
SELECT pg_advisory_xact_lock(%(key)s);

-- name: lake_unpublished_paths
-- Files committed commits staged that the Delta log does not hold yet: vacuum must keep them.
SELECT lake_table, path FROM {s}.lake_files WHERE target = %(target)s AND NOT published;

-- name: lake_files_add
-- In a commit's transaction: the Parquet files it wrote (invisible until published), in one statement.
INSERT INTO {s}.lake_files (target, lake_table, path, migration_id, day, rows, bytes, first_time, last_time)
SELECT %(target)s, f.t, f.p, f.m, f.d, f.r, f.b, f.first, f.last
FROM unnest(%(tables)s::text[], %(paths)s::text[], %(ms)s::bigint[], %(days)s::date[], %(rows)s::bigint[],
            %(bytes)s::bigint[], %(firsts)s::timestamptz[], %(lasts)s::timestamptz[]) AS f(t, p, m, d, r, b, first, last);

-- name: lake_publish_next
-- A publish number for every committed file not yet part of a publish, of both tables in one
-- statement (one snapshot): a commit's files are in the same publish whatever its tables.
WITH n AS (SELECT nextval('{s}.lake_publish_seq') AS id)
UPDATE {s}.lake_files f SET publish_id = n.id FROM n
WHERE f.target = %(target)s AND NOT f.published AND f.publish_id IS NULL
RETURNING n.id;

-- name: lake_published_upto
-- The Delta log holds every publish up to this app-transaction version: those files are visible.
UPDATE {s}.lake_files SET published = true
WHERE target = %(target)s AND lake_table = %(table)s AND NOT published AND publish_id <= %(upto)s;

-- name: lake_unpublished
-- Files in a publish the Delta log does not hold yet (this one, or one a crash interrupted).
SELECT path, migration_id, day, rows, bytes, publish_id FROM {s}.lake_files
WHERE target = %(target)s AND lake_table = %(table)s AND NOT published AND publish_id IS NOT NULL ORDER BY seq;

-- name: lake_partition_span
-- First and last record time of a partition's published files (manifests).
SELECT min(first_time), max(last_time) FROM {s}.lake_files
WHERE target = %(target)s AND lake_table = %(table)s AND migration_id = %(m)s AND day = %(day)s AND published;

-- name: lake_partitions_touched
-- Partitions with files published since they were last compacted and described (by any process:
-- a killed run's partitions are described by the next one to finish).
SELECT DISTINCT migration_id, day FROM {s}.lake_files
WHERE target = %(target)s AND lake_table = %(table)s AND published AND NOT described ORDER BY 1, 2;

-- name: lake_described
-- A partition compacted and its manifest written.
UPDATE {s}.lake_files SET described = true
WHERE target = %(target)s AND lake_table = %(table)s AND migration_id = %(m)s AND day = %(day)s AND published;

-- name: lake_partitions
-- The partitions `run --lake` / `follow --lake` wrote to this lake, and files committed but not yet
-- published (verify --lake).
SELECT migration_id, day, count(*) FILTER (WHERE NOT published) FROM {s}.lake_files WHERE target = %(target)s
GROUP BY 1, 2 ORDER BY 1, 2;

-- name: contracts_mark
-- What contract state and the transfer facts look like now, cheaply (an export rewrites them when
-- this changed).
SELECT concat_ws(':', count(*), count(archived_pos), max(created_pos), max(archived_pos), max(synchronizer_pos),
                 (SELECT concat_ws('/', count(*), max(pos)) FROM {s}.amulet_transfers))
FROM {s}.contracts;

-- name: export_contracts_mark
-- The contract-state mark last exported to a target.
SELECT value FROM {s}.scanfill_meta WHERE key = 'lake_export_contracts ' || %(target)s;

-- name: export_contracts_done
INSERT INTO {s}.scanfill_meta VALUES ('lake_export_contracts ' || %(target)s, %(mark)s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;

-- name: transfers_forget
-- The transfer facts of positions [lo, hi) (of one synchronizer, or all), whose ledger rows a repair
-- removes (`--refetch`, `follow --rewind`): the reload writes them again.
DELETE FROM {s}.amulet_transfers
WHERE pos >= %(lo)s AND pos < %(hi)s AND (%(sync)s::text IS NULL OR synchronizer_id = %(sync)s);

-- ----- a database whose ledger is in a lake (lake.known) ------------------------------------------

-- name: lake_ledger
-- The lakes `run --lake` / `follow --lake` sent this database's ledger to, with the rows committed
-- there: while one is listed, the ledger tables are not the copy.
SELECT target, coalesce(sum(rows) FILTER (WHERE lake_table = 'updates'), 0),
       coalesce(sum(rows) FILTER (WHERE lake_table = 'events'), 0)
FROM {s}.lake_files GROUP BY 1 ORDER BY 1;

-- name: lake_forget
-- `abort --truncate --lake`: the lake's tables were removed; everything recorded of it goes too.
WITH f AS (DELETE FROM {s}.lake_files WHERE target = %(target)s RETURNING 1),
x AS (DELETE FROM {s}.lake_exports WHERE target = %(target)s RETURNING 1),
m AS (DELETE FROM {s}.scanfill_meta WHERE key = 'lake_export_contracts ' || %(target)s RETURNING 1)
SELECT (SELECT count(*) FROM f) + (SELECT count(*) FROM x) + (SELECT count(*) FROM m);
