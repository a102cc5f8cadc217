-- What is provably whole, from the coordination tables alone (small: ranges, slices, the follower's
-- cursor) and the completeness ledger the loaders keep; never a scan of the ledger tables. Applied
-- by `coord.schema.init` whenever this file changes (CREATE OR REPLACE only; no data here).
--
-- A range's record times are covered by three kinds of work: the loaded part of each slice
-- ([last_before, max_time) while it is open, all of it once complete), the part a follower owns
-- (after `followed_after`), and nothing else. An open slice's unloaded part [min_time, last_before)
-- is not stored even where an older slice covered it (a refetch re-opens a window that way).

-- Each range cut into segments of one state: 'stored', or why not: 'loading' (a live lease is on
-- it), 'failed' (a worker gave up on that slice: `detail` says why), 'waiting' (an open slice nobody
-- holds), 'unproven' (no scan reporting a complete history served the range), 'missing' (no slice
-- covers it: a hole in the plan), 'disputed' (stored, but `verify` proved that day's copy wrong:
-- `detail` is its finding and the repair; a refetch covering the day clears it).
CREATE OR REPLACE FUNCTION {s}.coverage_segments()
RETURNS TABLE (migration_id bigint, synchronizer_id text, seg_from timestamptz, seg_to timestamptz, state text,
               detail text)
LANGUAGE sql STABLE AS $$
-- one sweep over the slices' boundaries (running sums of "loaded here" and "pending here", by
-- kind), so the cost grows as n log n in the slices, never with the ledger's rows
WITH r AS (
    SELECT r.migration_id AS m, r.synchronizer_id AS sync, r.min_time AS lo,
           r.max_time + interval '1 microsecond' AS hi, r.source_complete AS proven,
           r.followed_after::timestamptz + interval '1 microsecond' AS f
    FROM {s}.backfill_ranges r),
fd AS (  -- the days verify proved wrong, each clipped to its range
    SELECT c.migration_id AS m, c.synchronizer_id AS sync,
           greatest(c.day::timestamp AT TIME ZONE 'UTC', r.lo) AS lo,
           least((c.day + 1)::timestamp AT TIME ZONE 'UTC', r.hi) AS hi
    FROM {s}.completeness c JOIN r ON r.m = c.migration_id AND r.sync = c.synchronizer_id
    WHERE c.finding IS NOT NULL),
sl AS (
    SELECT c.migration_id AS m, c.synchronizer_id AS sync, c.min_time AS lo, c.max_time AS hi, c.complete,
           CASE WHEN c.complete THEN c.min_time
                ELSE greatest(c.min_time, least(c.max_time, c.last_before::timestamptz)) END AS done_from,
           coalesce(c.lease_until > now(), false) AS leased, c.failure
    FROM {s}.backfill_cursors c),
ev AS (
    SELECT sl.m, sl.sync, sl.done_from AS t, 1 AS dl, 0 AS dp, 0 AS dpl, 0 AS dpf, 0 AS dd FROM sl
    WHERE sl.done_from < sl.hi
    UNION ALL SELECT sl.m, sl.sync, sl.hi, -1, 0, 0, 0, 0 FROM sl WHERE sl.done_from < sl.hi
    UNION ALL SELECT sl.m, sl.sync, sl.lo, 0, 1, sl.leased::int, (sl.failure IS NOT NULL)::int, 0
              FROM sl WHERE NOT sl.complete AND sl.lo < sl.done_from
    UNION ALL SELECT sl.m, sl.sync, sl.done_from, 0, -1, -sl.leased::int, -(sl.failure IS NOT NULL)::int, 0
              FROM sl WHERE NOT sl.complete AND sl.lo < sl.done_from
    UNION ALL SELECT fd.m, fd.sync, fd.lo, 0, 0, 0, 0, 1 FROM fd WHERE fd.lo < fd.hi
    UNION ALL SELECT fd.m, fd.sync, fd.hi, 0, 0, 0, 0, -1 FROM fd WHERE fd.lo < fd.hi
    UNION ALL SELECT r.m, r.sync, r.lo, 0, 0, 0, 0, 0 FROM r
    UNION ALL SELECT r.m, r.sync, r.hi, 0, 0, 0, 0, 0 FROM r
    UNION ALL SELECT r.m, r.sync, r.f, 0, 0, 0, 0, 0 FROM r WHERE r.f IS NOT NULL),
pts AS (SELECT ev.m, ev.sync, ev.t, sum(ev.dl) AS dl, sum(ev.dp) AS dp, sum(ev.dpl) AS dpl, sum(ev.dpf) AS dpf,
               sum(ev.dd) AS dd
        FROM ev GROUP BY 1, 2, 3),
swept AS (
    SELECT pts.m, pts.sync, pts.t AS a, lead(pts.t) OVER w AS z, sum(pts.dl) OVER w AS loaded,
           sum(pts.dp) OVER w AS pending, sum(pts.dpl) OVER w AS leased, sum(pts.dpf) OVER w AS failed,
           sum(pts.dd) OVER w AS disputed
    FROM pts WINDOW w AS (PARTITION BY pts.m, pts.sync ORDER BY pts.t)),
judged AS (
    SELECT sw.m, sw.sync, sw.a, sw.z,
           CASE WHEN NOT r.proven THEN 'unproven'
                WHEN sw.pending > 0 THEN CASE WHEN sw.leased > 0 THEN 'loading' WHEN sw.failed > 0 THEN 'failed'
                                              ELSE 'waiting' END
                WHEN sw.disputed > 0 THEN 'disputed'
                WHEN r.f IS NOT NULL AND sw.a >= r.f THEN 'stored'
                WHEN sw.loaded > 0 THEN 'stored'
                ELSE 'missing' END AS state,
           CASE WHEN NOT r.proven THEN 'no scan reporting a complete history serves this range'
                WHEN sw.pending > 0 AND sw.leased = 0 AND sw.failed > 0 THEN
                     (SELECT x.failure FROM sl x WHERE x.m = sw.m AND x.sync = sw.sync AND NOT x.complete
                        AND x.failure IS NOT NULL AND sw.a >= x.lo AND sw.a < x.done_from LIMIT 1)
                WHEN sw.pending = 0 AND sw.disputed > 0 THEN
                     (SELECT c.finding || coalesce('; repair: ' || c.repair, '') FROM {s}.completeness c
                      WHERE c.migration_id = sw.m AND c.synchronizer_id = sw.sync
                        AND c.day = (sw.a AT TIME ZONE 'UTC')::date)
                WHEN sw.pending = 0 AND NOT (r.f IS NOT NULL AND sw.a >= r.f) AND sw.loaded = 0 THEN
                     'no slice covers this part of the range'
           END AS detail
    FROM swept sw JOIN r ON r.m = sw.m AND r.sync = sw.sync
    WHERE sw.z IS NOT NULL AND sw.a >= r.lo AND sw.z <= r.hi),
marked AS (
    SELECT j.*, CASE WHEN lag(j.state) OVER w IS NOT DISTINCT FROM j.state
                      AND lag(j.detail) OVER w IS NOT DISTINCT FROM j.detail AND lag(j.z) OVER w = j.a
                     THEN 0 ELSE 1 END AS starts
    FROM judged j WINDOW w AS (PARTITION BY j.m, j.sync ORDER BY j.a)),
grouped AS (
    SELECT mk.*, sum(mk.starts) OVER (PARTITION BY mk.m, mk.sync ORDER BY mk.a) AS grp FROM marked mk)
SELECT g.m, g.sync, min(g.a), max(g.z), g.state, g.detail
FROM grouped g GROUP BY g.m, g.sync, g.grp, g.state, g.detail ORDER BY 1, 2, 3
$$;

-- The newest position (migration, record time) through which the copy is provably whole: every
-- earlier migration entirely, and this one up to that record time on every synchronizer. NULL
-- while nothing is. Downstream jobs wait on it, as PQS users wait on its watermark.
CREATE OR REPLACE FUNCTION {s}.complete_through()
RETURNS TABLE (migration_id bigint, record_time timestamptz, ledger_position bigint)
LANGUAGE sql STABLE AS $$
WITH seg AS (SELECT * FROM {s}.coverage_segments()),
mig AS (
    SELECT r.migration_id AS m, min(r.min_time) AS bottom, min(r.max_time) AS top,
           (SELECT min(seg.seg_from) FROM seg WHERE seg.migration_id = r.migration_id AND seg.state <> 'stored')
               AS hole
    FROM {s}.backfill_ranges r GROUP BY r.migration_id),
fol AS (SELECT c.migration_id AS m, c.record_time AS t FROM {s}.follow_cursors c WHERE c.stream = 'updates'),
first_hole AS (SELECT mig.m, mig.hole, mig.bottom FROM mig WHERE mig.hole IS NOT NULL ORDER BY mig.m LIMIT 1),
pick AS (
    SELECT fh.m, fh.hole - interval '1 microsecond' AS t
    FROM first_hole fh
    WHERE fh.hole > fh.bottom OR EXISTS (SELECT 1 FROM mig WHERE mig.m < fh.m)
    UNION ALL
    SELECT mig.m, greatest(mig.top, (SELECT fol.t FROM fol WHERE fol.m = mig.m))
    FROM mig WHERE NOT EXISTS (SELECT 1 FROM first_hole) AND mig.m = (SELECT max(m) FROM mig))
SELECT pick.m, pick.t, {s}.ledger_position(pick.m, pick.t) FROM pick
$$;

-- One row per (migration, synchronizer, UTC day) of every range, quiet days included: what the
-- ledger holds (kept by every commit), and its status:
--   complete        every microsecond of the day is stored, from scans reporting a complete history
--                   (for the newest migration: the day has ended below the watermark)
--   in progress     part of it is being loaded now (a live lease), or a load is running and will reach
--                   it, or it is the newest migration's day still going on
--   gap             part of it is missing and nothing is loading it: a slice a worker gave up on (its
--                   reason in `detail`), a range no complete scan serves, a part no slice covers, a
--                   day stored in part by a load that stopped, or a day `verify` proved wrong (its
--                   finding and the repair in `detail`, until a refetch covering the day)
--   not yet loaded  nothing of it is stored yet and no load is running
CREATE OR REPLACE FUNCTION {s}.completeness_days(from_day date DEFAULT NULL, to_day date DEFAULT NULL)
RETURNS TABLE (migration_id bigint, synchronizer_id text, day date, status text, updates bigint, events bigint,
               first_record_time timestamptz, last_record_time timestamptz, sources text[], agreed_by integer,
               disagreements bigint, verified_at timestamptz, verified_by text[], verified_updates bigint,
               detail text)
LANGUAGE sql STABLE AS $$
WITH seg AS (SELECT * FROM {s}.coverage_segments()),
newest AS (
    SELECT n.m, greatest((SELECT min(r.max_time) FROM {s}.backfill_ranges r WHERE r.migration_id = n.m),
                         (SELECT c.record_time FROM {s}.follow_cursors c WHERE c.stream = 'updates'
                          AND c.migration_id = n.m)) AS top
    FROM (SELECT max(r.migration_id) AS m FROM {s}.backfill_ranges r) n),
running AS (SELECT EXISTS (SELECT 1 FROM {s}.backfill_cursors c WHERE c.lease_until > now()) AS yes),
seg_days AS (  -- each segment on each UTC day it touches (the segments tile every range: every day is here)
    SELECT seg.migration_id AS m, seg.synchronizer_id AS sync, g::date AS day, seg.state, seg.detail
    FROM seg, generate_series((seg.seg_from AT TIME ZONE 'UTC')::date,
                              ((seg.seg_to - interval '1 microsecond') AT TIME ZONE 'UTC')::date, interval '1 day') g
    WHERE (from_day IS NULL OR g::date >= from_day) AND (to_day IS NULL OR g::date <= to_day)),
judged AS (
    SELECT sd.m, sd.sync, sd.day,
           bool_or(sd.state = 'loading') AS loading,
           bool_or(sd.state IN ('failed', 'unproven', 'missing', 'disputed')) AS broken,
           bool_or(sd.state = 'waiting') AS waiting,
           bool_or(sd.state = 'stored') AS some_stored,
           string_agg(DISTINCT sd.detail, '; ') FILTER (WHERE sd.state IN ('failed', 'unproven', 'missing', 'disputed'))
               AS why
    FROM seg_days sd GROUP BY sd.m, sd.sync, sd.day),
disagreed AS (
    SELECT u.migration_id AS m, u.synchronizer_id AS sync, (u.record_time AT TIME ZONE 'UTC')::date AS day,
           count(DISTINCT x.n) AS n
    FROM (SELECT row_number() OVER () AS n, unnest(sd.differing_ids) AS id FROM {s}.scan_disagreements sd) x
    JOIN {s}.ledger_updates u ON u.update_id = x.id
    GROUP BY 1, 2, 3)
SELECT j.m, j.sync, j.day,
       CASE WHEN j.loading THEN 'in progress'
            WHEN j.broken THEN 'gap'
            WHEN j.waiting AND (SELECT yes FROM running) THEN 'in progress'
            WHEN j.waiting AND (j.some_stored OR coalesce(c.updates, 0) > 0) THEN 'gap'
            WHEN j.waiting THEN 'not yet loaded'
            WHEN j.m = (SELECT m FROM newest) AND (SELECT top FROM newest)
                 < (j.day + 1)::timestamp AT TIME ZONE 'UTC' - interval '1 microsecond' THEN 'in progress'
            ELSE 'complete' END,
       coalesce(c.updates, 0), coalesce(c.events, 0), c.first_record_time, c.last_record_time,
       coalesce(c.sources, '{}'), c.agreed_by, coalesce(dis.n, 0), c.verified_at, c.verified_by,
       c.verified_updates,
       CASE WHEN j.broken THEN j.why
            WHEN j.waiting AND NOT (SELECT yes FROM running) AND (j.some_stored OR coalesce(c.updates, 0) > 0)
                 THEN 'stored in part by a load that stopped; `scanfill run` loads the rest' END
FROM judged j
LEFT JOIN {s}.completeness c ON c.migration_id = j.m AND c.synchronizer_id = j.sync AND c.day = j.day
LEFT JOIN disagreed dis ON dis.m = j.m AND dis.sync = j.sync AND dis.day = j.day
ORDER BY j.day, j.m, j.sync
$$;
