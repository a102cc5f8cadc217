"""`scanfill sim`: the simulated Scan API from the command line."""

from __future__ import annotations

import sys
from typing import Any

import click

from scanfill.cli import main

# ----- sim ---------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=int,
    help="Port of the first scan; scan k listens on PORT+k (0 = any free port).",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, byte-identical ledger.")
@click.option(
    "--rows",
    default=1_000_000,
    show_default=True,
    type=int,
    help="Approximate ledger size in database rows (updates + events).",
)
@click.option(
    "--migrations",
    default="0,1,3",
    show_default=True,
    help="Migration ids (need not be contiguous); ranges of neighbours overlap in time.",
)
@click.option("--synchronizers", default=1, show_default=True, type=int, help="Synchronizers per migration.")
@click.option(
    "--gap-us",
    default=2_000_000,
    show_default=True,
    type=int,
    help="Mean spacing of updates on one synchronizer, in microseconds.",
)
@click.option("--events-mean", default=12.0, show_default=True, type=float, help="Mean events per update.")
@click.option(
    "--payload-pad",
    default=0,
    show_default=True,
    type=int,
    help="Extra bytes of text in each created event's payload (bigger rows).",
)
@click.option(
    "--reassignment-rate",
    default=0.02,
    show_default=True,
    type=float,
    help="Share of updates that are assign/unassign (needs --synchronizers > 1).",
)
@click.option("--no-labels", is_flag=True, help="Serve protobuf_json records without field labels.")
@click.option("--interface-rate", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Share of transfers exercised through the token standard's interface (interface_id set).")
@click.option("--external-hash-rate", default=0.02, show_default=True, type=click.FloatRange(0, 1),
              help="Share of transactions with an external_transaction_hash (sent by newer scans).")
@click.option("--shared-microseconds", is_flag=True,
              help="Break Scan's promise of unique record times per migration: synchronizers share microseconds.")
@click.option("--grow", default=0.0, show_default=True, type=click.FloatRange(0),
              help="The active migration grows by this many updates/s while serving (see --grow-updates).")
@click.option("--grow-updates", default=0, type=click.IntRange(0),
              help="How many updates appear that way (default: 10 minutes of --grow), added to the ledger.")
@click.option("--older", "older", type=int, default=0, metavar="K",
              help="The first K scans behave like an older Splice release (no /v0/migrations/last).")
@click.option(
    "--instances",
    default=1,
    show_default=True,
    type=int,
    help="Scans serving the same ledger, each on its own port, all listed by /v0/scans.",
)
@click.option(
    "--late-join",
    default=0.0,
    show_default=True,
    type=float,
    help="The last scan lacks this share of each range (later min, complete=false, /v2 503).",
)
@click.option("--prerender", is_flag=True, help="Render every update at start so serving costs no generation.")
@click.option("--cache-mb", default=256, show_default=True, type=int, help="LRU of rendered updates.")
@click.option("--latency-ms", default=0.0, show_default=True, type=float, help="Added latency per page.")
@click.option("--jitter-ms", default=0.0, show_default=True, type=float, help="Random extra latency up to this.")
@click.option("--rate-429", default=0.0, type=float, help="Share of requests answered 429 text/plain.")
@click.option("--rate-503", default=0.0, type=float, help="Share answered 503 JSON (server timeout).")
@click.option("--rate-502", default=0.0, type=float, help="Share answered 502.")
@click.option("--rate-403", default=0.0, type=float, help="Share answered 403 with an HTML page.")
@click.option("--rate-drop", default=0.0, type=float, help="Share whose connection is closed mid-body.")
@click.option("--rate-hang", default=0.0, type=float, help="Share never answered (see --hang-s).")
@click.option("--rate-malformed", default=0.0, type=float, help="Share answered 200 with a malformed page.")
@click.option(
    "--every",
    "every",
    multiple=True,
    metavar="FAULT=N",
    help="Schedule a fault on every Nth request, e.g. --every 503=10 (429, 503, 502, 403, drop, hang, malformed).",
)
@click.option("--retry-after", default=1.0, show_default=True, type=float,
              help="Retry-After of a 429 fault, seconds (0: no header). Scan's own limiter (--client-rps) sends none.")
@click.option("--hang-s", default=3600.0, show_default=True, type=float, help="How long a hung request hangs.")
@click.option("--no-gzip", is_flag=True, help="Never compress, even when the client asks for gzip.")
@click.option("--client-rps", default=0.0, type=float, help="Per-client rate limit in requests/s (429 past it).")
@click.option("--max-page", default=0, type=int, help="Cap items per page below the requested count.")
@click.option("--latency-per-1000-ms", default=0.0, type=click.FloatRange(0),
              help="Added latency per 1000 updates served (a scan's database time).")  # fmt: skip
@click.option("--bandwidth-mb-s", default=0.0, type=click.FloatRange(0), help="Egress cap per scan in MB/s.")
@click.option("--network-rps", default=0.0, type=click.FloatRange(0),
              help="One limiter over every scan's paging requests (requests/s, 429 past it).")  # fmt: skip
@click.option("--mainnet-shape", is_flag=True,
              help="10 scans like MainNet's: 1-3 s per 1000-update page, 20 MB/s each, 200 requests/s in all, "
                   "one answering 403, one hanging (other fault options are ignored).")  # fmt: skip
@click.option("--faults-everywhere", is_flag=True, help="Apply faults to discovery endpoints too, not only paging.")
@click.option("--fault-seed", default=0, type=int, help="Seed of the fault decisions.")
@click.option("--economy", is_flag=True,
              help="Play a real Amulet economy forward instead (rounds, coupons minted at their rounds' rates, "
                   "traffic purchases, expiries, splice-amulet 0.1.13, 0.1.14, 0.1.17 then 0.1.21, each in "
                   "Splice's Daml of that version): what `scanfill rounds` reads. One synchronizer per migration.")  # fmt: skip
@click.option("--economy-versions", default="0.1.13,0.1.14,0.1.17,0.1.21", show_default=True,
              help="The splice-amulet versions the economy runs, one after another every 8 rounds (of 0.1.13, "
                   "0.1.14, 0.1.17, 0.1.21). Splice's scan_txlog.py predates 0.1.17 and cannot read its "
                   "token-standard transfers nor its V2 expiry and unlock choices: 0.1.13,0.1.14 gives it a "
                   "history it reads whole.")  # fmt: skip
@click.option("--acs-snapshot-hours", default=3.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Each scan snapshots its ACS every this many hours of record time (the /v0|v1/state/acs "
                   "snapshots; the registry's totalSupply is the newest one's).")  # fmt: skip
@click.option("--tls-cert", default="", help="Serve HTTPS with this PEM certificate (with --tls-key).")
@click.option("--tls-key", default="", help="PEM private key of --tls-cert.")
def sim(**o: Any) -> None:
    """Serve a realistic, deterministic Scan API over a synthetic ledger (for demos, tests, benchmarks).

    Endpoints live under http://HOST:PORT/api/scan, the Token Standard registry's under
    http://HOST:PORT/registry; /sim/stats reports what was served.
    """
    from dataclasses import replace

    from scanfill.sim import FaultConfig, InstanceConfig, LedgerConfig, SimConfig, serve_forever
    from scanfill.sim.config import OLDER_SCAN_MISSING

    ids = tuple(int(x) for x in str(o["migrations"]).split(",") if x.strip())
    ledger = LedgerConfig.for_rows(
        int(str(o["rows"])),
        seed=int(str(o["seed"])),
        ids=ids,
        synchronizers=int(str(o["synchronizers"])),
        gap_us=int(str(o["gap_us"])),
        events_mean=float(str(o["events_mean"])),
        labels=not o["no_labels"],
        payload_pad=int(str(o["payload_pad"])),
        reassignment_rate=float(str(o["reassignment_rate"])),
        interface_rate=float(str(o["interface_rate"])),
        external_hash_rate=float(str(o["external_hash_rate"])),
        shared_microseconds=bool(o["shared_microseconds"]),
        acs_snapshot_hours=float(str(o["acs_snapshot_hours"])),
    )
    if o["economy"]:
        from scanfill.economy.packages import DSO_WITH_AMULET
        from scanfill.sim.ledger import EconomyConfig

        versions = tuple(v.strip() for v in str(o["economy_versions"]).split(",") if v.strip())
        if not versions or any(v not in DSO_WITH_AMULET for v in versions):
            raise click.BadParameter(f"{o['economy_versions']!r}: give some of {', '.join(DSO_WITH_AMULET)}, "
                                     "comma-separated, oldest first", param_hint="--economy-versions")  # fmt: skip
        ledger = replace(ledger, economy=EconomyConfig(versions=versions,
                                                       upgrades=tuple(8 * k for k in range(1, len(versions)))))
    grow = float(str(o["grow"]))
    grow_updates = (int(str(o["grow_updates"])) or int(grow * 600)) if grow > 0 else 0
    if grow_updates:
        ledger = ledger.with_growth(grow_updates)
    faults = FaultConfig(
        latency_ms=float(str(o["latency_ms"])),
        jitter_ms=float(str(o["jitter_ms"])),
        rate_429=float(str(o["rate_429"])),
        rate_503=float(str(o["rate_503"])),
        rate_502=float(str(o["rate_502"])),
        rate_403=float(str(o["rate_403"])),
        rate_drop=float(str(o["rate_drop"])),
        rate_hang=float(str(o["rate_hang"])),
        rate_malformed=float(str(o["rate_malformed"])),
        retry_after_s=float(str(o["retry_after"])),
        hang_s=float(str(o["hang_s"])),
        gzip=not o["no_gzip"],
        client_rps=float(str(o["client_rps"])),
        max_page=int(str(o["max_page"])),
        latency_per_1000_ms=float(str(o["latency_per_1000_ms"])),
        bandwidth_mb_s=float(str(o["bandwidth_mb_s"])),
        data_only=not o["faults_everywhere"],
        seed=int(str(o["fault_seed"])),
    )
    every: dict[str, int] = {}
    for item in o["every"]:  # type: ignore[attr-defined]
        name, _, count = str(item).partition("=")
        if name not in ("429", "503", "502", "403", "drop", "hang", "malformed") or not count.isdigit():
            raise click.BadParameter(f"expected FAULT=N with FAULT in 429,503,502,403,drop,hang: {item!r}")
        every[f"every_{name}"] = int(count)
    faults = replace(faults, **every)  # type: ignore[arg-type]
    older = int(str(o["older"]))
    instances = [InstanceConfig(name=f"sv-{k + 1}", missing=OLDER_SCAN_MISSING if k < older else ())
                 for k in range(int(str(o["instances"])))]  # fmt: skip
    if float(str(o["late_join"])) > 0:
        instances[-1] = replace(instances[-1], late_join=float(str(o["late_join"])))
    config = SimConfig(
        ledger=ledger,
        instances=tuple(instances),
        faults=faults,
        prerender=bool(o["prerender"]),
        cache_mb=int(str(o["cache_mb"])),
        host=str(o["host"]),
        port=int(str(o["port"])),
        tls_cert=str(o["tls_cert"]),
        tls_key=str(o["tls_key"]),
        grow=grow,
        grow_updates=grow_updates,
        network_rps=float(str(o["network_rps"])),
    )
    if o["mainnet_shape"]:
        from scanfill.sim.config import mainnet_shaped

        shaped = mainnet_shaped(ledger, prerender=bool(o["prerender"]))
        config = replace(config, instances=shaped.instances, network_rps=shaped.network_rps)

    def announce(urls: list[str]) -> None:
        from scanfill.sim.economy import make_ledger

        lg = make_ledger(ledger)
        click.echo(
            f"scanfill sim: {lg.total_updates():,} updates in migrations {lg.migration_ids()}, seed {ledger.seed}"
        )
        for url in urls:
            click.echo(f"  serving {url}")
        click.echo("Ctrl+C to stop.")
        sys.stdout.flush()

    serve_forever(config, announce=announce)
