"""The deployment files parse and have the structure their docs promise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from scanfill.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_github_actions_parallel_backfill() -> None:
    wf = yaml.safe_load((DEPLOY / "github-actions/parallel-backfill.yml").read_text())
    assert wf["name"] == "Parallel Backfill"
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as a boolean
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"migration_id", "worker_count"} <= set(inputs)
    jobs = wf["jobs"]
    assert list(jobs) == ["prepare", "backfill", "restore"]
    assert jobs["backfill"]["needs"] == "prepare" and jobs["restore"]["needs"] == "backfill"
    assert (
        "worker_count" in json.dumps(jobs["prepare"])
        and "fromJSON" in jobs["backfill"]["strategy"]["matrix"]["worker_id"]
    )
    assert jobs["backfill"]["strategy"]["fail-fast"] is False
    steps = " ".join(s.get("run", "") for j in jobs.values() for s in j["steps"])
    for cmd in (
        "scanfill prepare",
        "scanfill run --plan-only",
        "scanfill run --concurrency",
        "--restore",
        "scanfill verify",
    ):
        assert cmd in steps, cmd
    assert {"WORKER_ID", "WORKER_COUNT"} <= set(jobs["backfill"]["env"])
    assert wf["env"]["DATABASE_URL"] == "${{ secrets.DATABASE_URL }}"  # secrets, never literals


def test_kubernetes_indexed_job() -> None:
    job = yaml.safe_load((DEPLOY / "kubernetes/backfill-job.yaml").read_text())
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 2
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert "scanfill run" in " ".join(c["args"]) and "--metrics-port 9464" in " ".join(c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"
    assert env["SCAN_URL"]["valueFrom"]["secretKeyRef"]["key"] == "SCAN_URL"
    assert c["ports"][0]["containerPort"] == 9464
    assert pod["terminationGracePeriodSeconds"] >= 60  # room for the graceful stop on SIGTERM


def test_grafana_dashboard_uses_only_real_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana/scanfill-dashboard.json").read_text())
    m = Metrics()
    m.rows.labels("ledger_updates").inc(0)
    m.requests.labels("u", "200").observe(0.1)
    m.errors.labels("u", "503").inc(0)
    m.cursor.labels("s").set(0)
    exposed = set(re.findall(r"^(scanfill_\w+)", generate_latest(m.registry).decode(), re.M))
    used = {name for p in dash["panels"] for t in p["targets"] for name in re.findall(r"scanfill_\w+", t["expr"])}
    assert used and used <= exposed, used - exposed
    assert len(dash["panels"]) >= 6 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
