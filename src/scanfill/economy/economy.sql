-- Round economics over the copy: rounds, Scan's removed aggregates (round totals, round party
-- totals, leaderboards), what Scan never served (SV rewards, coupons by their own round, claimed vs
-- expired vs unclaimed, burns, taps, supply), all from `amulet_transfers` (one row per outermost
-- TransferSummary, kept by the loaders) and contract state. Semantics and sources:
-- docs/round-economics.md in the scanfill repository. Exact `numeric` throughout; where Daml
-- rounds (coupon x rate), `half_even` rounds as Daml does.

-- Splice's published splice-amulet packages (daml/dars.lock), to read each event by its version.
DROP VIEW IF EXISTS {s}.amulet_packages CASCADE;
CREATE VIEW {s}.amulet_packages (package_id, version) AS VALUES {packages};

-- x rounded to `places` decimals, ties to even (Daml's Decimal arithmetic). PostgreSQL's round()
-- and casts to numeric(p, s) send ties away from zero: 0.00000000005 -> 0.0000000001, not 0.
CREATE OR REPLACE FUNCTION {s}.half_even(x numeric, places int DEFAULT 10) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x IS NULL THEN NULL
                WHEN abs(x - trunc(x, places)) * power(10::numeric, places) = 0.5
                THEN CASE WHEN mod(abs(trunc(x, places)) * power(10::numeric, places), 2) = 0 THEN trunc(x, places)
                          ELSE trunc(x, places) + sign(x) * power(10::numeric, -places) END
                ELSE round(x, places) END
$$;

-- What one summary minted: Splice's five mint inputs (faucet and liveness CC are inside the validator
-- input, as Splice reports them). A tap's row mints through `tapped`, not here.
CREATE OR REPLACE FUNCTION {s}.minted(x {s}.amulet_transfers) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(x.app_rewards, 0) + coalesce(x.validator_rewards, 0) + coalesce(x.sv_rewards, 0)
           + coalesce(x.unclaimed_activity_rewards, 0) + coalesce(x.dev_fund_rewards, 0)
$$;

-- What one summary burnt, per choice as Splice defines it (docs/src/app_dev/scan_api/scan_bulk_data_api.rst,
-- "Computing Total Burnt Canton Coin"; AmuletRules.daml):
-- - a transfer: output fees + holding fees + sender-change fee (its outputs go to their receivers);
-- - choices whose one output is burnt (a traffic purchase, a preapproval's creation or renewal, an
--   external party's setup): everything the inputs held that did not come back as change, i.e.
--   inputAmuletAmount + reward inputs - senderChangeAmount. That is the docs' amuletPaid + holding
--   fees + sender-change fee for a traffic purchase (up to 0.1.6 the output to the DSO pays the output
--   fees, receiverFeeRatio 1.0, so they are inside amuletPaid: block 08, 24003.6076103600), and
--   amuletPaid + output fees + the rest for a preapproval (61.3199997000); from 0.1.7 Splice's
--   splitAndBurn burns the split (amuletPaid, less the create fee for traffic until 0.1.16) plus the
--   summary's fees, which is again input - change. Without those fields: the fields' sum.
CREATE OR REPLACE FUNCTION {s}.burns_whole_output(choice text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT choice IN ('AmuletRules_BuyMemberTraffic', 'AmuletRules_CreateTransferPreapproval', 'TransferPreapproval_Renew',
                      'AmuletRules_CreateExternalPartySetupProposal')
$$;

CREATE OR REPLACE FUNCTION {s}.burnt(x {s}.amulet_transfers) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN {s}.burns_whole_output(x.choice) AND x.input_amulets IS NOT NULL AND x.sender_change_amount IS NOT NULL
                THEN x.input_amulets + {s}.minted(x) - x.sender_change_amount
                ELSE coalesce(x.output_fees, 0) + coalesce(x.holding_fees, 0) + coalesce(x.sender_change_fee, 0)
                     + coalesce(x.amulet_paid, 0) END
$$;

-- Every mining round the copy knows: when it opened, stopped being open (summarizing), had its
-- rates set (issuing), closed and was archived; its price, rates and configuration. `closed` is
-- Scan's rule (a ClosedMiningRound exists and no Open/Summarizing/Issuing contract of the round is
-- active); `whole` adds scanfill's: the history up to its closing is provably complete (below the
-- completeness watermark), so its totals are final.
DROP VIEW IF EXISTS {s}.rounds CASCADE;
CREATE VIEW {s}.rounds AS
WITH r AS (
    SELECT (c.payload->'round'->>'number')::bigint AS round, substring(c.template_name FROM ':(.*)$') AS phase, c.*
    FROM {s}.contracts c
    WHERE c.template_name IN ('Splice.Round:OpenMiningRound', 'Splice.Round:SummarizingMiningRound',
                              'Splice.Round:IssuingMiningRound', 'Splice.Round:ClosedMiningRound')
      AND c.created_pos IS NOT NULL),
w AS MATERIALIZED (SELECT ledger_position FROM {s}.complete_through()),
g AS (
    SELECT r.round,
        min(created_record_time) FILTER (WHERE phase = 'OpenMiningRound') AS opened_at,
        min((payload->>'opensAt')::timestamptz) FILTER (WHERE phase = 'OpenMiningRound') AS opens_at,
        min((payload->>'targetClosesAt')::timestamptz) FILTER (WHERE phase = 'OpenMiningRound') AS target_closes_at,
        min(created_record_time) FILTER (WHERE phase = 'SummarizingMiningRound') AS summarizing_at,
        min(created_record_time) FILTER (WHERE phase = 'IssuingMiningRound') AS issuing_at,
        min(created_pos) FILTER (WHERE phase = 'IssuingMiningRound') AS issuing_pos,
        min(created_record_time) FILTER (WHERE phase = 'ClosedMiningRound') AS closed_at,
        min(created_at) FILTER (WHERE phase = 'ClosedMiningRound') AS closed_effective_at,
        min(created_pos) FILTER (WHERE phase = 'ClosedMiningRound') AS closed_pos,
        min(archived_record_time) FILTER (WHERE phase = 'ClosedMiningRound') AS archived_at,
        min((payload->>'amuletPrice')::numeric) FILTER (WHERE phase = 'OpenMiningRound') AS amulet_price,
        min((payload->'tickDuration'->>'microseconds')::bigint) FILTER (WHERE phase = 'OpenMiningRound') AS tick_us,
        min(split_part(template_id, ':', 1)) FILTER (WHERE phase = 'OpenMiningRound') AS open_package_id,
        (array_agg(payload ORDER BY phase DESC) FILTER (WHERE phase IN ('IssuingMiningRound', 'ClosedMiningRound')))[1] AS rates,
        (array_agg(payload) FILTER (WHERE phase = 'OpenMiningRound'))[1] AS open_payload,
        count(*) FILTER (WHERE archived_pos IS NULL AND phase <> 'ClosedMiningRound') AS active_before_close,
        count(*) FILTER (WHERE phase = 'ClosedMiningRound') AS closed_contracts
    FROM r GROUP BY r.round)
SELECT g.round, g.opened_at, g.opens_at, g.target_closes_at, g.summarizing_at, g.issuing_at, g.closed_at,
       g.closed_effective_at, g.archived_at, g.amulet_price,
       (g.rates->>'issuancePerValidatorRewardCoupon')::numeric AS validator_rate,
       (g.rates->>'issuancePerFeaturedAppRewardCoupon')::numeric AS featured_app_rate,
       (g.rates->>'issuancePerUnfeaturedAppRewardCoupon')::numeric AS unfeatured_app_rate,
       (g.rates->>'issuancePerSvRewardCoupon')::numeric AS sv_rate,
       coalesce((g.rates->>'optIssuancePerValidatorFaucetCoupon')::numeric, CASE WHEN g.rates IS NOT NULL THEN 0 END) AS faucet_rate,
       g.tick_us, p.version AS amulet_version,
       -- what StartIssuing left unclaimed (the tranches' remainders: an UnclaimedReward) and set aside
       -- for the development fund (an UnclaimedDevelopmentFundCoupon), both created with the round's
       -- IssuingMiningRound, so at its position (found through the (template, position) index)
       (SELECT sum((u.payload->>'amount')::numeric) FROM {s}.contracts u
         WHERE u.template_name = 'Splice.Amulet:UnclaimedReward' AND u.created_pos = g.issuing_pos) AS unclaimed_at_issuing,
       (SELECT sum((u.payload->>'amount')::numeric) FROM {s}.contracts u
         WHERE u.template_name = 'Splice.Amulet:UnclaimedDevelopmentFundCoupon' AND u.created_pos = g.issuing_pos)
           AS development_fund_issued,
       g.open_payload->'transferConfigUsd' AS transfer_config_usd, g.open_payload->'issuanceConfig' AS issuance_config,
       CASE WHEN g.archived_at IS NOT NULL THEN 'archived' WHEN g.closed_at IS NOT NULL THEN 'closed'
            WHEN g.issuing_at IS NOT NULL THEN 'issuing' WHEN g.summarizing_at IS NOT NULL THEN 'summarizing'
            ELSE 'open' END AS phase,
       (g.closed_contracts > 0 AND g.active_before_close = 0) AS closed,
       (g.closed_contracts > 0 AND g.active_before_close = 0 AND g.closed_pos <= w.ledger_position) AS whole
FROM g LEFT JOIN {s}.amulet_packages p ON p.package_id = g.open_package_id
LEFT JOIN w ON true;

-- Every reward coupon: its kind, the party it rewards, its own round, its weight (`amount`, or an
-- SV's integer weight, or 1 for a faucet coupon or liveness record) and its CC value at its own
-- round's IssuingMiningRound rates (weight x rate, half-even to 10 places, as Daml mints it), and
-- what became of it: claimed (an input of a transfer), expired (the DSO's expiry), or unclaimed yet.
DROP VIEW IF EXISTS {s}.coupons CASCADE;
CREATE VIEW {s}.coupons AS
WITH c AS (
    SELECT c.contract_id, c.template_name, c.payload, c.created_record_time, c.created_pos, c.created_update_id,
           c.archived_record_time, c.archived_pos, c.archived_update_id, c.archived_choice, c.template_id,
           CASE c.template_name
               WHEN 'Splice.Amulet:AppRewardCoupon' THEN
                   CASE WHEN (c.payload->>'featured')::boolean THEN 'app_featured' ELSE 'app_unfeatured' END
               WHEN 'Splice.Amulet:ValidatorRewardCoupon' THEN 'validator'
               WHEN 'Splice.Amulet:SvRewardCoupon' THEN 'sv'
               WHEN 'Splice.ValidatorLicense:ValidatorFaucetCoupon' THEN 'faucet'
               WHEN 'Splice.ValidatorLicense:ValidatorLivenessActivityRecord' THEN 'liveness'
               WHEN 'Splice.Amulet:RewardCouponV2' THEN 'app_v2'
               WHEN 'Splice.Amulet:UnclaimedActivityRecord' THEN 'unclaimed_activity'
               WHEN 'Splice.Amulet:DevelopmentFundCoupon' THEN 'development_fund' END AS kind
    FROM {s}.contracts c
    WHERE c.template_name IN ('Splice.Amulet:AppRewardCoupon', 'Splice.Amulet:ValidatorRewardCoupon',
                              'Splice.Amulet:SvRewardCoupon', 'Splice.ValidatorLicense:ValidatorFaucetCoupon',
                              'Splice.ValidatorLicense:ValidatorLivenessActivityRecord', 'Splice.Amulet:RewardCouponV2',
                              'Splice.Amulet:UnclaimedActivityRecord', 'Splice.Amulet:DevelopmentFundCoupon')
      AND c.created_pos IS NOT NULL),
k AS (
    SELECT c.*, (c.payload->'round'->>'number')::bigint AS round,
           CASE WHEN c.kind = 'validator' THEN c.payload->>'user' WHEN c.kind = 'sv' THEN c.payload->>'beneficiary'
                WHEN c.kind IN ('faucet', 'liveness') THEN c.payload->>'validator'
                ELSE coalesce(c.payload->>'beneficiary', c.payload->>'provider') END AS party,
           CASE WHEN c.kind IN ('faucet', 'liveness') THEN 1::numeric
                WHEN c.kind = 'sv' THEN (c.payload->>'weight')::numeric
                ELSE (c.payload->>'amount')::numeric END AS weight
    FROM c)
SELECT k.contract_id, k.kind, k.party, k.payload->>'provider' AS provider, k.round, k.weight,
       CASE k.kind WHEN 'app_featured' THEN {s}.half_even(k.weight * r.featured_app_rate)
                   WHEN 'app_unfeatured' THEN {s}.half_even(k.weight * r.unfeatured_app_rate)
                   WHEN 'validator' THEN {s}.half_even(k.weight * r.validator_rate)
                   WHEN 'sv' THEN k.weight * r.sv_rate
                   WHEN 'faucet' THEN r.faucet_rate WHEN 'liveness' THEN r.faucet_rate
                   ELSE k.weight END AS cc,
       CASE WHEN k.archived_pos IS NULL THEN 'unclaimed'
            WHEN k.archived_choice LIKE '%Expire%' THEN 'expired'
            WHEN k.archived_choice LIKE '%Withdraw' OR k.archived_choice LIKE '%Reject' THEN 'withdrawn'
            ELSE 'claimed' END AS status,
       k.created_record_time, k.created_update_id, k.archived_record_time, k.archived_update_id, k.archived_choice,
       p.version AS amulet_version
FROM k LEFT JOIN {s}.rounds r ON r.round = k.round
LEFT JOIN {s}.amulet_packages p ON p.package_id = split_part(k.template_id, ':', 1);

-- Per transfer round: Scan's /v0/round-totals (closed rounds; the balance fields as Scan served
-- them since 0.5.3: zero) and what Scan never served. `whole` says the round's totals are final.
DROP VIEW IF EXISTS {s}.round_totals CASCADE;
CREATE VIEW {s}.round_totals AS
WITH t AS (
    SELECT round, coalesce(sum(app_rewards), 0) AS app, coalesce(sum(validator_rewards), 0) AS val,
           coalesce(sum(sv_rewards), 0) AS sv, coalesce(sum(faucet_rewards), 0) AS faucet,
           coalesce(sum(unclaimed_activity_rewards), 0) AS uar, coalesce(sum(dev_fund_rewards), 0) AS dev,
           coalesce(sum(tapped), 0) AS tapped, coalesce(sum(holding_fees), 0) AS hf, coalesce(sum(output_fees), 0) AS fees,
           coalesce(sum(sender_change_fee), 0) AS cf, coalesce(sum(amulet_paid), 0) AS paid,
           coalesce(sum({s}.burnt(x)), 0) AS burnt,
           coalesce(sum(traffic_bytes), 0) AS tb, count(*) FILTER (WHERE traffic_bytes IS NOT NULL) AS tn,
           coalesce(sum(amulet_paid) FILTER (WHERE traffic_bytes IS NOT NULL), 0) AS tcc,
           count(*) FILTER (WHERE tapped IS NULL) AS transfers, count(*) FILTER (WHERE NOT readable) AS unreadable
    FROM {s}.amulet_transfers x GROUP BY round)
SELECT r.round AS closed_round, r.closed_effective_at AS closed_round_effective_at,
       coalesce(t.app, 0) AS app_rewards, coalesce(t.val, 0) AS validator_rewards,
       0::numeric AS change_to_initial_amount_as_of_round_zero, 0::numeric AS change_to_holding_fees_rate,
       sum(coalesce(t.app, 0)) OVER w AS cumulative_app_rewards,
       sum(coalesce(t.val, 0)) OVER w AS cumulative_validator_rewards,
       0::numeric AS cumulative_change_to_initial_amount_as_of_round_zero,
       0::numeric AS cumulative_change_to_holding_fees_rate, 0::numeric AS total_amulet_balance,
       coalesce(t.sv, 0) AS sv_rewards, coalesce(t.faucet, 0) AS faucet_rewards,
       coalesce(t.uar, 0) AS unclaimed_activity_rewards, coalesce(t.dev, 0) AS dev_fund_rewards,
       -- minted() summed column by column: the same sums, 1.6x faster over 423k summaries
       coalesce(t.app + t.val + t.sv + t.uar + t.dev, 0) AS minted, coalesce(t.tapped, 0) AS tapped,
       coalesce(t.hf, 0) AS holding_fees, coalesce(t.fees, 0) AS transfer_fees, coalesce(t.cf, 0) AS sender_change_fees,
       coalesce(t.burnt, 0) AS burnt,
       coalesce(t.tb, 0) AS traffic_purchased, coalesce(t.tcc, 0) AS traffic_purchased_cc_spent,
       coalesce(t.tn, 0) AS traffic_num_purchases, coalesce(t.transfers, 0) AS transfers,
       coalesce(t.unreadable, 0) AS unreadable_summaries, r.whole
FROM {s}.rounds r LEFT JOIN t ON t.round = r.round
WHERE r.closed
WINDOW w AS (ORDER BY r.round);

-- Per (closed transfer round, party): Scan's /v0/round-party-totals (the party a summary is
-- attributed to: the sender, the buyer of traffic), with SV and faucet rewards beside.
DROP VIEW IF EXISTS {s}.round_party_totals CASCADE;
CREATE VIEW {s}.round_party_totals AS
WITH t AS (
    SELECT x.round, x.party, coalesce(sum(x.app_rewards), 0) AS app, coalesce(sum(x.validator_rewards), 0) AS val,
           coalesce(sum(x.sv_rewards), 0) AS sv, coalesce(sum(x.faucet_rewards), 0) AS faucet,
           coalesce(sum(x.traffic_bytes), 0) AS tb,
           coalesce(sum(x.amulet_paid) FILTER (WHERE x.traffic_bytes IS NOT NULL), 0) AS tcc,
           count(*) FILTER (WHERE x.traffic_bytes IS NOT NULL) AS tn
    FROM {s}.amulet_transfers x JOIN {s}.rounds r ON r.round = x.round AND r.closed
    WHERE x.party IS NOT NULL AND x.tapped IS NULL
    GROUP BY x.round, x.party)
SELECT t.round AS closed_round, t.party, t.app AS app_rewards, t.val AS validator_rewards,
       t.tb AS traffic_purchased, t.tcc AS traffic_purchased_cc_spent, t.tn AS traffic_num_purchases,
       sum(t.app) OVER w AS cumulative_app_rewards, sum(t.val) OVER w AS cumulative_validator_rewards,
       sum(t.tb) OVER w AS cumulative_traffic_purchased, sum(t.tcc) OVER w AS cumulative_traffic_purchased_cc_spent,
       sum(t.tn) OVER w AS cumulative_traffic_num_purchases,
       0::numeric AS cumulative_change_to_initial_amount_as_of_round_zero,
       0::numeric AS cumulative_change_to_holding_fees_rate,
       t.sv AS sv_rewards, t.faucet AS faucet_rewards
FROM t
WHERE t.app > 0 OR t.val > 0 OR t.sv > 0 OR t.tn > 0
WINDOW w AS (PARTITION BY t.party ORDER BY t.round);

-- Per coupon round and kind: created, claimed, expired and still unclaimed (count, weight, CC).
-- Rewards by the round that earned them, where round_totals counts them by the round that minted.
DROP VIEW IF EXISTS {s}.round_coupon_totals CASCADE;
CREATE VIEW {s}.round_coupon_totals AS
SELECT round, kind, count(*) AS created, sum(weight) AS created_weight, sum(cc) AS created_cc,
       count(*) FILTER (WHERE status = 'claimed') AS claimed, coalesce(sum(cc) FILTER (WHERE status = 'claimed'), 0) AS claimed_cc,
       count(*) FILTER (WHERE status = 'expired') AS expired, coalesce(sum(cc) FILTER (WHERE status = 'expired'), 0) AS expired_cc,
       count(*) FILTER (WHERE status = 'unclaimed') AS unclaimed,
       coalesce(sum(cc) FILTER (WHERE status = 'unclaimed'), 0) AS unclaimed_cc
FROM {s}.coupons GROUP BY round, kind;

-- Amulets that expired as dust (the DSO's Amulet_Expire): their whole initial amount left the supply.
DROP VIEW IF EXISTS {s}.expired_amulets CASCADE;
CREATE VIEW {s}.expired_amulets AS
SELECT c.contract_id, coalesce(c.payload->'amulet', c.payload)->>'owner' AS owner,
       (coalesce(c.payload->'amulet', c.payload)->'amount'->>'initialAmount')::numeric AS initial_amount,
       (coalesce(c.payload->'amulet', c.payload)->'amount'->'createdAt'->>'number')::bigint AS created_round,
       c.archived_record_time, c.archived_pos, c.archived_update_id, c.archived_choice
FROM {s}.contracts c
WHERE c.template_name IN ('Splice.Amulet:Amulet', 'Splice.Amulet:LockedAmulet')
  AND c.archived_choice IN ('Amulet_Expire', 'Amulet_ExpireV2', 'LockedAmulet_ExpireAmulet', 'LockedAmulet_ExpireAmuletV2');

-- Whole amulets the DSO burnt outside any summary: an Amulet owned by the DSO, created and archived
-- in one transaction. A CNS entry's payment is one (Ans.daml: AnsRules_CollectInitialEntryPayment and
-- AnsRules_CollectEntryRenewalPayment archive the amulet the payment's transfer sent to the DSO; the
-- docs' block 10 burns 200 CC so, beside its transfer's 8 CC of fees). Where a summary burns its
-- whole output (burns_whole_output: up to 0.1.6 a traffic purchase's output went to the DSO and was
-- archived), that output is already in the summary's burnt().
DROP VIEW IF EXISTS {s}.dso_burnt_amulets CASCADE;
CREATE VIEW {s}.dso_burnt_amulets AS
SELECT c.contract_id, c.archived_update_id AS update_id, c.archived_record_time AS record_time, c.archived_pos AS pos,
       (c.payload->'amount'->>'initialAmount')::numeric AS amount
FROM {s}.contracts c
WHERE c.template_name = 'Splice.Amulet:Amulet' AND c.payload->>'owner' = c.payload->>'dso'
  AND c.created_pos = c.archived_pos AND c.created_update_id = c.archived_update_id
  AND NOT EXISTS (SELECT 1 FROM {s}.amulet_transfers x
                  WHERE x.update_id = c.archived_update_id AND {s}.burns_whole_output(x.choice));

-- What each transaction burnt: its summaries' burnt() and the whole amulets the DSO burnt in it.
DROP VIEW IF EXISTS {s}.update_burns CASCADE;
CREATE VIEW {s}.update_burns AS
SELECT update_id, min(record_time) AS record_time, sum(burnt) AS burnt
FROM (SELECT x.update_id, x.record_time, {s}.burnt(x) AS burnt FROM {s}.amulet_transfers x WHERE x.tapped IS NULL
      UNION ALL
      SELECT d.update_id, d.record_time, d.amount FROM {s}.dso_burnt_amulets d) b
GROUP BY update_id;

-- Minted against burnt, per UTC day of record time: the summaries' burnt(), the expired dust and the
-- whole amulets the DSO burnt outside a summary (dso_burnt_amulets: CNS payments).
DROP VIEW IF EXISTS {s}.burn_mint_daily CASCADE;
CREATE VIEW {s}.burn_mint_daily AS
WITH t AS (
    SELECT (record_time AT TIME ZONE 'UTC')::date AS day,
           sum({s}.minted(x)) AS minted, coalesce(sum(x.tapped), 0) AS tapped, sum({s}.burnt(x)) AS burnt
    FROM {s}.amulet_transfers x GROUP BY 1),
d AS (SELECT (archived_record_time AT TIME ZONE 'UTC')::date AS day, sum(initial_amount) AS dust
      FROM {s}.expired_amulets GROUP BY 1),
b AS (SELECT (record_time AT TIME ZONE 'UTC')::date AS day, sum(amount) AS dso FROM {s}.dso_burnt_amulets GROUP BY 1),
days AS (SELECT day FROM t UNION SELECT day FROM d UNION SELECT day FROM b)
SELECT days.day, coalesce(t.minted, 0) AS minted, coalesce(t.tapped, 0) AS tapped,
       coalesce(t.burnt, 0) AS burnt, coalesce(d.dust, 0) AS dust_burnt,
       coalesce(t.burnt, 0) + coalesce(d.dust, 0) + coalesce(b.dso, 0) AS total_burnt,
       CASE WHEN coalesce(t.minted, 0) > 0 THEN (coalesce(t.burnt, 0) + coalesce(d.dust, 0) + coalesce(b.dso, 0)) / t.minted
            END AS burn_mint_ratio,
       coalesce(b.dso, 0) AS dso_burnt
FROM days LEFT JOIN t ON t.day = days.day LEFT JOIN d ON d.day = days.day LEFT JOIN b ON b.day = days.day;

-- Minted against burnt, per closed transfer round.
DROP VIEW IF EXISTS {s}.burn_mint_rounds CASCADE;
CREATE VIEW {s}.burn_mint_rounds AS
SELECT closed_round AS round, minted, tapped, burnt, traffic_purchased_cc_spent,
       CASE WHEN minted > 0 THEN burnt / minted END AS burn_mint_ratio, whole
FROM {s}.round_totals;

-- A leaderboard over transfer rounds [from_round, to_round] (NULL: open): the parties with the most
-- `metric` (app_rewards, validator_rewards, sv_rewards, faucet_rewards, traffic_purchased,
-- traffic_purchased_cc_spent), ties by party descending as Scan ordered them.
CREATE OR REPLACE FUNCTION {s}.leaderboard(metric text, from_round bigint DEFAULT NULL, to_round bigint DEFAULT NULL,
                                           lim int DEFAULT 10)
RETURNS TABLE (rank bigint, party text, amount numeric, rounds bigint, first_round bigint, last_round bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    -- the same sums round_party_totals makes, straight from the facts (no running sums to compute)
    expr text := CASE metric
        WHEN 'app_rewards' THEN 'x.app_rewards' WHEN 'validator_rewards' THEN 'x.validator_rewards'
        WHEN 'sv_rewards' THEN 'x.sv_rewards' WHEN 'faucet_rewards' THEN 'x.faucet_rewards'
        WHEN 'traffic_purchased' THEN 'x.traffic_bytes'
        WHEN 'traffic_purchased_cc_spent' THEN 'CASE WHEN x.traffic_bytes IS NOT NULL THEN x.amulet_paid END'
        WHEN 'traffic_num_purchases' THEN 'CASE WHEN x.traffic_bytes IS NOT NULL THEN 1 END' END;
BEGIN
    IF expr IS NULL THEN
        RAISE EXCEPTION 'unknown leaderboard metric %', metric;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT row_number() OVER (ORDER BY sum(%1$s) DESC, x.party DESC), x.party, sum(%1$s)::numeric,
                count(DISTINCT x.round) FILTER (WHERE %1$s > 0), min(x.round) FILTER (WHERE %1$s > 0),
                max(x.round) FILTER (WHERE %1$s > 0)
         FROM {s}.amulet_transfers x
         WHERE x.tapped IS NULL AND x.party IS NOT NULL
           AND ($1 IS NULL OR x.round >= $1) AND ($2 IS NULL OR x.round <= $2)
           AND x.round IN (SELECT r.round FROM {s}.rounds r WHERE r.closed)
         GROUP BY x.party HAVING sum(%1$s) > 0
         ORDER BY sum(%1$s) DESC, x.party DESC LIMIT $3', expr) USING from_round, to_round, lim;
END $$;

CREATE OR REPLACE FUNCTION {s}.top_app_providers(from_round bigint DEFAULT NULL, to_round bigint DEFAULT NULL, lim int DEFAULT 10)
RETURNS TABLE (rank bigint, party text, amount numeric, rounds bigint, first_round bigint, last_round bigint)
LANGUAGE sql STABLE AS $$ SELECT * FROM {s}.leaderboard('app_rewards', from_round, to_round, lim) $$;
CREATE OR REPLACE FUNCTION {s}.top_validators(from_round bigint DEFAULT NULL, to_round bigint DEFAULT NULL, lim int DEFAULT 10)
RETURNS TABLE (rank bigint, party text, amount numeric, rounds bigint, first_round bigint, last_round bigint)
LANGUAGE sql STABLE AS $$ SELECT * FROM {s}.leaderboard('validator_rewards', from_round, to_round, lim) $$;
CREATE OR REPLACE FUNCTION {s}.top_svs(from_round bigint DEFAULT NULL, to_round bigint DEFAULT NULL, lim int DEFAULT 10)
RETURNS TABLE (rank bigint, party text, amount numeric, rounds bigint, first_round bigint, last_round bigint)
LANGUAGE sql STABLE AS $$ SELECT * FROM {s}.leaderboard('sv_rewards', from_round, to_round, lim) $$;
CREATE OR REPLACE FUNCTION {s}.top_traffic_buyers(from_round bigint DEFAULT NULL, to_round bigint DEFAULT NULL, lim int DEFAULT 10)
RETURNS TABLE (rank bigint, party text, amount numeric, rounds bigint, first_round bigint, last_round bigint)
LANGUAGE sql STABLE AS $$ SELECT * FROM {s}.leaderboard('traffic_purchased', from_round, to_round, lim) $$;

-- Total supply at a position (Token Standard `totalSupply`): the initial amounts of every active
-- Amulet and LockedAmulet, accrued holding fees not subtracted (as Scan computes it).
CREATE OR REPLACE FUNCTION {s}.supply_at(at_migration bigint DEFAULT NULL, at_time timestamptz DEFAULT NULL)
RETURNS TABLE (supply numeric, unlocked numeric, locked numeric, holdings bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(initial_amount), 0), coalesce(sum(initial_amount) FILTER (WHERE NOT locked), 0),
           coalesce(sum(initial_amount) FILTER (WHERE locked), 0), count(*)
    FROM {s}.holdings(at_migration, at_time)
$$;

-- /v0/events app activity records and traffic summaries (kept by `follow`) by their round.
DROP VIEW IF EXISTS {s}.round_activity CASCADE;
CREATE VIEW {s}.round_activity AS
SELECT (e.app_activity_records->>'round_number')::bigint AS round, count(*) AS updates,
       coalesce(sum((e.traffic_summary->>'total_traffic_cost')::bigint), 0) AS traffic_cost,
       coalesce(sum((SELECT sum((x->>'weight')::numeric) FROM json_array_elements(e.app_activity_records->'records') x)), 0)
           AS activity_weight
FROM {s}.scan_events e
WHERE e.app_activity_records IS NOT NULL
GROUP BY 1;

-- The same per (round, party) of the activity records: what CIP-104 rewards are computed from.
DROP VIEW IF EXISTS {s}.round_party_activity CASCADE;
CREATE VIEW {s}.round_party_activity AS
SELECT (e.app_activity_records->>'round_number')::bigint AS round, x->>'party' AS party, count(*) AS records,
       sum((x->>'weight')::numeric) AS activity_weight
FROM {s}.scan_events e, json_array_elements(e.app_activity_records->'records') x
WHERE e.app_activity_records IS NOT NULL
GROUP BY 1, 2;

-- What contradicts the rules of docs/round-economics.md ("What rounds_check() proves", each rule with
-- its source): each row is one violation. Empty on a sound copy, whole or partial: a rule is checked
-- only where the copy holds what it needs.
CREATE OR REPLACE FUNCTION {s}.rounds_check()
RETURNS TABLE (rule text, subject text, detail text)
LANGUAGE sql STABLE AS $$
    -- coupons consumed by a transfer, valued at their own round's rates, equal its summary's fields
    -- (AmuletRules.daml summarizeAndConsumeInput adds each input coupon's weight x its round's rate to its field;
    -- faucet and liveness go to inputValidatorRewardAmount too); only
    -- where every consumed coupon's creation and its round's IssuingMiningRound are in the copy
    WITH s AS (
        SELECT update_id, sum(coalesce(app_rewards, 0)) AS app, sum(coalesce(validator_rewards, 0)) AS val,
               sum(coalesce(sv_rewards, 0)) AS sv, bool_and(readable) AS readable
        FROM {s}.amulet_transfers WHERE tapped IS NULL GROUP BY update_id),
    c AS (
        SELECT archived_update_id AS update_id,
               sum(cc) FILTER (WHERE kind IN ('app_featured', 'app_unfeatured', 'app_v2')) AS app,
               sum(cc) FILTER (WHERE kind IN ('validator', 'faucet', 'liveness')) AS val,
               sum(cc) FILTER (WHERE kind = 'sv') AS sv, bool_and(cc IS NOT NULL) AS valued
        FROM {s}.coupons WHERE status = 'claimed' GROUP BY archived_update_id),
    unknown AS (
        SELECT DISTINCT archived_update_id AS update_id FROM {s}.contracts
        WHERE created_pos IS NULL AND archived_update_id IN (SELECT update_id FROM s)
          AND template_name IN ('Splice.Amulet:AppRewardCoupon', 'Splice.Amulet:ValidatorRewardCoupon',
                                'Splice.Amulet:SvRewardCoupon', 'Splice.ValidatorLicense:ValidatorFaucetCoupon',
                                'Splice.ValidatorLicense:ValidatorLivenessActivityRecord', 'Splice.Amulet:RewardCouponV2',
                                'Splice.Amulet:UnclaimedActivityRecord', 'Splice.Amulet:DevelopmentFundCoupon')),
    -- what the summaries say came in and went: inputs + minted + tapped - burnt (per choice, burnt())
    m AS (
        SELECT x.update_id, sum(coalesce(x.input_amulets, 0) + {s}.minted(x) + coalesce(x.tapped, 0) - {s}.burnt(x)) AS delta,
               bool_and(x.readable) AS readable
        FROM {s}.amulet_transfers x GROUP BY x.update_id),
    -- the holdings a transaction created that outlive it (one created and archived in it was burnt
    -- or spent there); the summaries' inputs stand for the holdings it consumed, so the check needs
    -- no earlier history (the docs' own sanity check: inputs - outputs = burnt)
    h AS (
        SELECT created_update_id AS u,
               sum((coalesce(payload->'amulet', payload)->'amount'->>'initialAmount')::numeric) AS created
        FROM {s}.contracts WHERE template_name IN ('Splice.Amulet:Amulet', 'Splice.Amulet:LockedAmulet')
          AND created_update_id IN (SELECT update_id FROM m) AND archived_pos IS DISTINCT FROM created_pos
        GROUP BY created_update_id),
    d AS (SELECT update_id, sum(amount) AS amount FROM {s}.dso_burnt_amulets GROUP BY update_id)
    SELECT 'coupon value', s.update_id,
           format('summary minted app %s validator %s sv %s; its consumed coupons are worth %s, %s, %s',
                  s.app, s.val, s.sv, coalesce(c.app, 0), coalesce(c.val, 0), coalesce(c.sv, 0))
    FROM s LEFT JOIN c ON c.update_id = s.update_id
    WHERE s.readable AND coalesce(c.valued, true) AND s.update_id NOT IN (SELECT update_id FROM unknown)
      AND (s.app <> coalesce(c.app, 0) OR s.val <> coalesce(c.val, 0) OR s.sv <> coalesce(c.sv, 0))
    UNION ALL
    SELECT 'supply delta', m.update_id,
           format('holdings created that outlive it: %s; the summaries say inputs + minted - burnt = %s, and the DSO burnt %s',
                  coalesce(h.created, 0), m.delta, coalesce(d.amount, 0))
    FROM m LEFT JOIN h ON h.u = m.update_id LEFT JOIN d ON d.update_id = m.update_id
    WHERE m.readable AND coalesce(h.created, 0) <> m.delta - coalesce(d.amount, 0)
    UNION ALL
    -- AmuletRules_AdvanceOpenMiningRounds moves each round through Open, Summarizing, Issuing and
    -- Closed once, creating one contract of each (AmuletRules.daml)
    SELECT 'one contract per phase', r.round::text, format('%s %s contracts', count(*), r.t)
    FROM (SELECT (payload->'round'->>'number')::bigint AS round, template_name AS t FROM {s}.contracts
          WHERE template_name LIKE 'Splice.Round:%MiningRound' AND created_pos IS NOT NULL) r
    GROUP BY r.round, r.t HAVING count(*) > 1
    UNION ALL
    SELECT 'readable summary', event_id,
           coalesce(problem, 'a TransferSummary (or tap) whose fields have no labels (positional records)')
    FROM {s}.amulet_transfers WHERE NOT readable
    UNION ALL
    -- each package version's rules: from 0.1.14 no holding fees are charged on transfer inputs
    -- (CIP-0078; Splice commit 9a40442f, "do not charge holding fees on transfer", splice-amulet 0.1.14);
    -- from 0.1.17 a transfer's fees are zero (CIP-0107; commit 1287b344 restricts the amulet config to
    -- no fees, 0.1.17)
    SELECT 'version rules', event_id,
           format('splice-amulet %s charged holding fees %s and fees %s', amulet_version, holding_fees,
                  coalesce(output_fees, 0) + coalesce(sender_change_fee, 0))
    FROM {s}.amulet_transfers
    WHERE amulet_version IS NOT NULL AND readable AND tapped IS NULL
      AND ((split_part(amulet_version, '.', 3)::int >= 14 AND coalesce(holding_fees, 0) <> 0)
           OR (split_part(amulet_version, '.', 3)::int >= 17
               AND coalesce(output_fees, 0) + coalesce(sender_change_fee, 0) <> 0))
$$;
