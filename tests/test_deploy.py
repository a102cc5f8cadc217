"""The deployment files parse and have the structure their docs promise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from scanfill.load.metrics import Metrics

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
    assert all(j["container"] == "${{ vars.SCANFILL_IMAGE }}" for j in jobs.values())
    assert "pip install scanfill" not in json.dumps(jobs)
    assert wf["env"]["DATABASE_URL"] == "${{ secrets.DATABASE_URL }}"  # secrets, never literals


def test_kubernetes_indexed_job() -> None:
    job = yaml.safe_load((DEPLOY / "kubernetes/backfill-job.yaml").read_text())
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 2
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    args = " ".join(c["args"])
    assert c["image"].endswith("/scanfill:0.1.0") and "command" not in c  # the image's entry point is scanfill
    assert args.startswith("run ") and "--metrics-port 9464" in args and "--metrics-addr 0.0.0.0" in args
    assert "pip install" not in args  # scanfill is not on a package index: the image carries it
    assert pod["securityContext"]["runAsNonRoot"] is True
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


def test_dockerfile_builds_a_slim_non_root_image_from_the_wheel() -> None:
    """Structure only: no container builder runs on the development machine (deploy/README.md)."""
    lines = [ln.strip() for ln in (DEPLOY.parent / "Dockerfile").read_text().splitlines()]
    instr = [ln.split(None, 1) for ln in lines if ln and not ln.startswith("#")]
    froms = [rest for op, rest in instr if op == "FROM"]
    assert len(froms) == 2 and all(f.startswith("python:3.12-slim") for f in froms)  # build stage + final
    final = instr[[k for k, (op, _) in enumerate(instr) if op == "FROM"][-1]:]
    final_text = " ".join(f"{op} {rest}" for op, rest in final)
    assert "COPY --from=build /dist/*.whl" in final_text and "pip install --no-cache-dir /tmp/*.whl" in final_text
    assert not any(tool in final_text for tool in ("gcc", "build-essential", "apt-get", "python -m build"))
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ('ENTRYPOINT', '["scanfill"]') in [tuple(i) for i in final]
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
