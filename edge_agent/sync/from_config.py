"""The sync service's settings from the agent's configuration (``[mqtt]``; none: standalone)."""

from __future__ import annotations

from edge_agent import __version__
from edge_agent.config import AgentSettings
from edge_agent.errors import AgentError
from edge_agent.sync.link import LinkSettings
from edge_agent.sync.service import SyncSettings
from edge_agent.sync.uplink import UplinkSettings


def sync_settings(settings: AgentSettings) -> SyncSettings | None:
    """What the agent's sync service connects with, or None without an ``[mqtt]`` table.

    The password is read from its file now (the provisioning writes it mode 0600).
    """
    mqtt = settings.mqtt
    if mqtt is None:
        return None
    password = None
    if mqtt.password_file is not None:
        try:
            password = mqtt.password_file.read_text("utf-8").strip()
        except OSError as exc:
            raise AgentError(f"mqtt.password_file: {mqtt.password_file}: {exc}") from exc
    link = LinkSettings(
        device_id=settings.device_id,
        host=mqtt.host,
        port=mqtt.port,
        username=mqtt.username or settings.device_id,
        password=password,
        tls=mqtt.tls,
        ca_file=mqtt.ca_file,
        cert_file=mqtt.cert_file,
        key_file=mqtt.key_file,
        keepalive_s=mqtt.keepalive_s,
        session_expiry_s=mqtt.session_expiry_s,
    )
    return SyncSettings(
        link=link,
        uplink=UplinkSettings(
            ack_timeout_s=mqtt.ack_timeout_s,
            no_subscribers_resend_s=mqtt.no_subscribers_resend_s,
            backlog_msgs_per_s=mqtt.backlog_msgs_per_s,
            backlog_target_rtt_s=mqtt.backlog_target_rtt_s,
        ),
        status_interval_s=mqtt.status_interval_s,
        agent_version=__version__,
    )
