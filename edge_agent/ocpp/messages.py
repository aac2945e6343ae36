"""The payloads the charge point sends, built from the agent's own records, pure.

A session's events (:class:`protocols.messages.SessionEvent`, as the store recorded them)
become its transaction messages: ``started`` → StartTransaction, ``updated`` → MeterValues
(sampled no more often than MeterValueSampleInterval), ``stopped`` → StopTransaction. The
CSMS is told the energy ChargeMitra bills: ``meterStop = meterStart + energy_wh`` — the
register at stop, except when the register went backwards mid-session (meter replaced),
where the session bills the highest value seen (edge_agent/sessions/machine.py).

``transactionId`` is not here: it is the CSMS's answer to StartTransaction, put in at sending
(:mod:`edge_agent.ocpp.transactions`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge_agent.ocpp.keys import ENERGY, POWER
from protocols.enums import ConnectorStatus, StopReason
from protocols.messages import SessionEvent

Payload = dict[str, Any]

#: Our stop reasons as OCPP 1.6 ``Reason`` (limits and faults have no reason of their own).
REASONS: dict[StopReason, str] = {
    StopReason.LOCAL: "Local",
    StopReason.REMOTE: "Remote",
    StopReason.EV_DISCONNECTED: "EVDisconnected",
    StopReason.POWER_LOSS: "PowerLoss",
    StopReason.REBOOT: "Reboot",
    StopReason.DE_AUTHORIZED: "DeAuthorized",
    StopReason.OVER_CURRENT: "EmergencyStop",
}
#: A Faulted connector's ChargePointErrorCode, by the fault's reason.
ERROR_CODES: dict[StopReason, str] = {
    StopReason.METER_FAILURE: "PowerMeterFailure",
    StopReason.STUCK_RELAY: "PowerSwitchFailure",
    StopReason.OVER_CURRENT: "OverCurrentFailure",
}


def timestamp(moment: datetime) -> str:
    """OCPP's dateTime: UTC, millisecond precision, ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def boot_notification(vendor: str, model: str, firmware: str, serial: str) -> Payload:
    return {
        "chargePointVendor": vendor,
        "chargePointModel": model,
        "chargePointSerialNumber": serial[:25],
        "firmwareVersion": firmware[:50],
    }


def status_notification(
    connector: int, status: ConnectorStatus | str, fault: StopReason | None, now: datetime
) -> Payload:
    payload: Payload = {
        "connectorId": connector,
        "status": str(status),
        "errorCode": "NoError",
        "timestamp": timestamp(now),
    }
    if status == ConnectorStatus.FAULTED:
        payload["errorCode"] = ERROR_CODES.get(fault, "OtherError") if fault else "OtherError"
        if fault is not None:
            payload["info"] = fault.value[:50]
    return payload


def sampled_values(
    energy_wh: int, power_w: float | None, measurands: list[str], context: str
) -> list[Payload]:
    values: list[Payload] = []
    for measurand in measurands:
        if measurand == ENERGY:
            values.append(
                {"value": str(energy_wh), "context": context, "measurand": ENERGY, "unit": "Wh"}
            )
        elif measurand == POWER and power_w is not None:
            values.append(
                {"value": f"{power_w:.1f}", "context": context, "measurand": POWER, "unit": "W"}
            )
    return values


def start_transaction(event: SessionEvent, id_tag: str) -> Payload:
    return {
        "connectorId": event.connector,
        "idTag": id_tag,
        "meterStart": event.meter_start_wh,
        "timestamp": timestamp(event.started_at),
    }


def meter_values(event: SessionEvent, measurands: list[str]) -> Payload | None:
    """A transaction's periodic sample (None: nothing to report with these measurands)."""
    values = sampled_values(event.meter_wh, event.power_w, measurands, "Sample.Periodic")
    if not values:
        return None
    return {
        "connectorId": event.connector,
        "meterValue": [{"timestamp": timestamp(event.ts), "sampledValue": values}],
    }


def stop_transaction(event: SessionEvent, id_tag: str | None) -> Payload:
    stopped = event.stopped_at or event.ts
    payload: Payload = {
        "meterStop": event.meter_start_wh + event.energy_wh,
        "timestamp": timestamp(stopped),
        "reason": REASONS.get(event.stop_reason, "Other") if event.stop_reason else "Other",
    }
    if id_tag is not None:
        payload["idTag"] = id_tag
    return payload
