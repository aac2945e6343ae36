"""deploy/cloud/: the environment example names every setting, the compose file is valid
Compose, the dashboard queries only (and all of) what /metrics exports, each ingest worker
serves its own /metrics, each broker config starts Mosquitto, and the cloud config's plugin
path is found on whatever machine renders it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from cloud import metrics
from cloud.app import create_app
from cloud.env_example import render
from cloud.settings import GROUPS, env_name, load_settings
from tests.support.certs import Certs
from tests.support.cloud_env import REDIS_URL, make_settings
from tests.support.mosquitto import (
    CLOUD_CONF,
    CLOUD_RENDER,
    Broker,
    cloud_broker,
    edge_broker,
    free_port,
    rendered_cloud_conf,
)
from tests.sync.rig import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUD = REPO_ROOT / "deploy" / "cloud"
#: Unpacked by deploy/dev/bootstrap.sh from the dclint npm package (its Compose spec schema).
COMPOSE_SCHEMA = REPO_ROOT / ".cache" / "compose-spec" / "dclint-3.1.0" / "compose.schema.json"
NAME = re.compile(r"^#?(CHARGEMITRA_[A-Z0-9_]+)=(.*)$")
METRIC = re.compile(r"\bchargemitra_[a-z0-9_]+")


def _example(path: Path) -> tuple[set[str], dict[str, str]]:
    """(every variable named, set or commented out; the ones set, with their values)."""
    named: set[str] = set()
    active: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := NAME.match(line):
            named.add(match[1])
            if not line.startswith("#"):
                active[match[1]] = match[2]
    return named, active


def test_env_example_names_every_setting_with_its_default() -> None:
    every = {
        env_name(group, field) for group, model in GROUPS.items() for field in model.model_fields
    }
    named, active = _example(CLOUD / "cloud.env.example")
    assert (sorted(every - named), sorted(named - every)) == ([], [])
    # The values written are the defaults: loading the file changes nothing.
    assert load_settings(active) == load_settings({})
    # And the file is exactly what the settings render (comments included).
    assert (CLOUD / "cloud.env.example").read_text() == render(), (
        "deploy/cloud/cloud.env.example is stale: run "
        "`chargemitra-cloud env-example > deploy/cloud/cloud.env.example`"
    )
    api_named, api_active = _example(CLOUD / "api.env.example")
    assert api_named <= every
    assert api_active["CHARGEMITRA_MQTT_USERNAME"] == "cloud-api"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CLOUD / "compose.yaml").read_text())
    return data


def test_compose_file_is_valid_compose_and_starts_what_the_cloud_needs() -> None:
    # The Compose specification's schema (draft-07), as a compose linter ships it.
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = _compose()
    jsonschema.Draft7Validator(schema).validate(compose)
    services = compose["services"]
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["migrate"]["command"] == ["chargemitra-cloud", "db", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"  # a one-shot
    workers = [s for s in services if s.startswith("ingest-")]
    assert len(workers) >= 2
    indexes = {services[w]["command"][services[w]["command"].index("--index") + 1] for w in workers}
    assert len(indexes) == len(workers)  # each its own MQTT client id
    for name in ("api", *workers):
        after = services[name]["depends_on"]
        assert after["migrate"]["condition"] == "service_completed_successfully"
    # Every file the compose file builds from or reads exists (env files as their examples).
    for service in services.values():
        build = service.get("build")
        if build:
            assert (CLOUD / build["context"] / build["dockerfile"]).is_file()
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            assert (CLOUD / f"{env_file}.example").is_file()
    # The broker image runs the project's cloud config itself (started below), rendered for
    # the image's own architecture by the same script as the systemd install.
    dockerfile = (CLOUD / "Dockerfile.broker").read_text()
    assert "COPY deploy/mosquitto/cloud/mosquitto.conf deploy/mosquitto/cloud/render-conf.sh" in (
        dockerfile
    )
    assert "render-conf.sh > /etc/mosquitto/chargemitra.conf" in dockerfile


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads((CLOUD / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    return {m for expr in exprs for m in METRIC.findall(expr)}


def _exported(text: str) -> tuple[set[str], set[str]]:
    """(every series name /metrics can carry, the metric families) from the text format."""
    series: set[str] = set()
    families: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
        "summary": ("", "_count", "_sum", "_created"),
    }
    for line in text.splitlines():
        if line.startswith("# TYPE chargemitra_"):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total")
            series |= {base + s for s in suffixes[kind]}
            # prometheus_client also declares each counter's and histogram's creation time
            # as a gauge family of its own: a timestamp, not a figure.
            if not name.endswith("_created"):
                families.add(base)
        elif line.startswith("chargemitra_"):
            series.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return series, families


async def test_dashboard_queries_exactly_the_figures_metrics_exports() -> None:
    # The real application's /metrics (no lifespan: the route needs no database).
    app = create_app(load_settings({}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        await client.get("/healthz")
        response = await client.get("/metrics")
    assert response.status_code == 200
    series, families = _exported(response.text)
    queried = _dashboard_metrics()
    assert queried - series == set(), (
        f"the dashboard queries what /metrics lacks: {queried - series}"
    )
    shown = {
        m.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for m in queried
    }
    assert families - shown == set(), f"figures /metrics exports with no panel: {families - shown}"
    # Prometheus scrapes the jobs the dashboard filters on.
    scrape = yaml.safe_load((CLOUD / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    assert jobs == {"chargemitra-api", "chargemitra-ingest"}


#: Labels Prometheus sets on every series it scrapes (the target's); a figure's own label of
#: the same name is renamed ``exported_<name>`` or, with honor_labels, replaces the target's.
TARGET_LABELS = {"job", "instance"}


def test_no_figure_carries_a_label_prometheus_sets_on_the_target() -> None:
    """Every figure of cloud/metrics.py keeps clear of ``job`` and ``instance`` (and of the
    reserved ``__`` prefix), and the dashboard reads no ``exported_`` label: the failures of
    a background job are counted by ``task``."""
    figures = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert figures
    for figure in figures:
        # prometheus_client has no public accessor for a metric's declared label names.
        names = set(figure._labelnames)
        assert not names & TARGET_LABELS, figure
        assert not [n for n in names if n.startswith("__")], figure
    assert metrics.WORKER_JOB_FAILURES._labelnames == ("task",)
    assert "exported_" not in (CLOUD / "grafana-dashboard.json").read_text()


@pytest.mark.integration
async def test_each_ingest_worker_serves_its_metrics_on_base_plus_index(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> None:
    settings = make_settings(db_url, broker, service_passwords["cloud-ingest"])
    env = {
        **os.environ,
        "CHARGEMITRA_APP_ENV": "test",
        "CHARGEMITRA_APP_SECRET_KEY": settings.app.secret_key.get_secret_value(),
        "CHARGEMITRA_DB_URL": db_url,
        "CHARGEMITRA_REDIS_URL": REDIS_URL,
        "CHARGEMITRA_MQTT_PORT": str(broker.port),
        "CHARGEMITRA_MQTT_PASSWORD": service_passwords["cloud-ingest"],
    }
    base = free_port() - 2  # worker 2 listens on base + 2: a port known to be free
    cli = Path(sys.executable).with_name("chargemitra-cloud")
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "ingest",
        "--index",
        "2",
        "--metrics-port",
        str(base),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        def scraped() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{base + 2}/metrics", timeout=2) as r:
                    return str(r.read().decode())
            except OSError:
                return None

        await wait_until(
            lambda: proc.returncode is not None or scraped() is not None,
            30,
            "the worker's /metrics",
        )
        text = await asyncio.to_thread(scraped)
        assert text is not None, (await proc.communicate())[1].decode()
        series, _ = _exported(text)
        ingest = {m for m in _dashboard_metrics() if m.startswith("chargemitra_ingest_")}
        assert ingest
        assert ingest <= series
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def test_mosquitto_starts_with_each_broker_config(tmp_path: Path, certs: Certs) -> None:
    """`mosquitto -c` with the cloud config (which the compose broker image runs unchanged)
    and the site bridge's, each with only its ports and paths replaced
    (tests/support/mosquitto.py), listens on every listener it declares."""
    cloud = cloud_broker(
        tmp_path / "cloud", certs, {"cloud-ingest": "a" * 16, "cloud-api": "b" * 16}
    )
    cloud.start()  # returns once the plain and the TLS listener accept connections
    try:
        site = edge_broker(
            tmp_path / "site",
            device_id="cm-site",
            password="c" * 16,
            cloud_tls_port=cloud.tls_port or 0,
            ca=certs.ca,
        )
        site.start()
        try:
            assert site.proc is not None
            assert site.proc.poll() is None
        finally:
            site.stop()
        assert cloud.proc is not None
        assert cloud.proc.poll() is None
    finally:
        cloud.stop()


PLUGIN = "mosquitto_dynamic_security.so"


def _plugin_line(conf: str) -> str:
    (line,) = [line for line in conf.splitlines() if line.startswith("plugin ")]
    return line.removeprefix("plugin ")


def test_the_cloud_config_names_no_architecture() -> None:
    """The shipped template carries a placeholder, not one machine's multiarch directory
    (it once named /usr/lib/x86_64-linux-gnu/, which does not exist on a Raspberry Pi or an
    arm64 server)."""
    directives = [line for line in CLOUD_CONF.read_text().splitlines() if not line.startswith("#")]
    assert "plugin DYNSEC_PLUGIN" in directives
    assert not [line for line in directives if "-linux-gnu" in line]


def test_the_rendered_plugin_path_exists_on_this_machine() -> None:
    """render-conf.sh (the install step of systemd, compose and the tests) writes the path
    of the plugin this machine has, the one its mosquitto package installed, and changes
    nothing else."""
    rendered = rendered_cloud_conf()
    path = Path(_plugin_line(rendered))
    assert path.name == PLUGIN
    assert path.is_file()
    if shutil.which("dpkg-query"):
        listed = subprocess.run(
            ["dpkg-query", "-L", "mosquitto"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert str(path) in listed
    template = CLOUD_CONF.read_text()
    assert rendered == template.replace("plugin DYNSEC_PLUGIN\n", f"plugin {path}\n")


def _root(tmp_path: Path, *plugins: str) -> Path:
    """A root file system holding ``plugins`` (paths inside it), no package database."""
    for plugin in plugins:
        (tmp_path / plugin.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / plugin.lstrip("/")).write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    "layout",
    [
        f"/usr/lib/aarch64-linux-gnu/{PLUGIN}",  # Debian / Raspberry Pi OS on arm64
        f"/usr/lib/arm-linux-gnueabihf/{PLUGIN}",  # 32-bit Raspberry Pi OS
        f"/usr/lib/x86_64-linux-gnu/{PLUGIN}",  # Debian on a PC
        f"/usr/lib/{PLUGIN}",  # the eclipse-mosquitto image, a source build
        f"/usr/lib64/{PLUGIN}",  # Fedora, RHEL
    ],
)
def test_the_plugin_is_found_wherever_the_distribution_put_it(tmp_path: Path, layout: str) -> None:
    conf = rendered_cloud_conf({"ROOT": str(_root(tmp_path, layout))})
    assert _plugin_line(conf) == layout


def test_the_plugin_path_can_be_given_and_a_missing_or_ambiguous_one_is_refused(
    tmp_path: Path,
) -> None:
    arm = f"/usr/lib/aarch64-linux-gnu/{PLUGIN}"
    i386 = f"/usr/lib/i386-linux-gnu/{PLUGIN}"
    both = _root(tmp_path / "both", arm, i386)
    with pytest.raises(RuntimeError, match="more than one"):
        rendered_cloud_conf({"ROOT": str(both)})
    given = rendered_cloud_conf({"ROOT": str(both), "MOSQUITTO_DYNSEC_PLUGIN": arm})
    assert _plugin_line(given) == arm
    with pytest.raises(RuntimeError, match="no such file"):
        rendered_cloud_conf({"ROOT": str(both), "MOSQUITTO_DYNSEC_PLUGIN": "/usr/lib/nope.so"})
    empty = _root(tmp_path / "empty")
    result = subprocess.run(
        ["/bin/sh", str(CLOUD_RENDER)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ROOT": str(empty)},
    )
    assert result.returncode == 1
    assert result.stdout == ""  # nothing half-written into the installed file
    assert f"no {PLUGIN} found" in result.stderr
