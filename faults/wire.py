"""What a fault and a live status look like on the wire (API bodies and stream frames).

Callers hand in rows with their station, box and connector already loaded
(select_related, or the ingest's own equipment rows), so rendering never queries.
"""

from notifications.wire import iso_time


def fault_data(fault) -> dict:
    # The key's part is the same at every change of the fault: built once per loaded
    # fault (a batch raises one fault hundreds of times).
    key = fault.__dict__.get("_wire_key")
    if key is None:
        # A null box or connector known from its id (notifications/wire.py says why: the
        # faults are read afresh for every group, so each read here is a first one).
        box = fault.box if fault.box_id is not None else None
        connector = fault.connector if fault.connector_id is not None else None
        key = fault.__dict__["_wire_key"] = {
            "stationId": fault.station.code,
            "boxId": box.code if box is not None else None,
            "connectorId": connector.code if connector is not None else None,
            "faultType": fault.fault_type,
            "code": fault.code or None,
        }
    return {
        "id": str(fault.id) if fault.id is not None else None,
        **key,
        "severity": fault.severity,
        "state": fault.state,
        "occurrences": fault.occurrences,
        "firstSeen": iso_time(fault.first_seen),
        "lastSeen": iso_time(fault.last_seen),
        "acknowledgedBy": fault.acknowledged_by or None,
        "acknowledgedAt": iso_time(fault.acknowledged_at),
        "resolvedBy": fault.resolved_by or None,
        "resolvedAt": iso_time(fault.resolved_at),
        "note": fault.note,
    }


def connector_status_data(station, box, connector, live) -> dict:
    """`live` is the connector's ConnectorStatus, or None before its first report."""
    return {
        "stationId": station.code,
        "boxId": box.code,
        "connectorId": connector.code,
        "status": live.status if live is not None else None,
        "since": iso_time(live.since) if live is not None else None,
    }


def box_status_data(station, box, live) -> dict:
    """`live` is the box's BoxStatus, or None before it was first heard from."""
    return {
        "stationId": station.code,
        "boxId": box.code,
        "status": (live.status or None) if live is not None else None,
        "lastSeen": iso_time(live.last_seen) if live is not None else None,
    }
