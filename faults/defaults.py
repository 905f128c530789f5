"""The default rules (DESIGN.md's contract, docs/FAULTS.md), as rows for the admin to edit.

Installed by the migration faults/0002; `install_default_rules` takes the model classes
so that the migration can pass its historical ones.
"""

NOTICE_TYPES = ["GENERAL", "GENERAL_NOTICE", "INFO", "NO_ERROR"]  # NoError matches NO_ERROR

EVENT_RULES = [
    # (position, enabled, match, effect, description)
    (10, True, {"cleared": True}, "clear", 'An event with "cleared": true resolves its fault.'),
    (20, True, {"action": "FAULT_CLEARED"}, "clear", "Action FAULT_CLEARED resolves its fault."),
    (30, False, {"status": "Available"}, "clear",
     "Off by default: a report of status Available resolves the fault of its key."),
] + [
    (40 + n, True, {"fault_type": fault_type}, "notice", f"{fault_type} opens nothing.")
    for n, fault_type in enumerate(NOTICE_TYPES)
]  # fmt: skip

SEVERITIES = {
    # The seed's fault types.
    "SYSTEM_ERROR": "error",
    "REMOTE_ERROR": "error",
    # OCPP 1.6 ChargePointErrorCode (NoError is a notice, above).
    "GroundFailure": "critical",
    "OverCurrentFailure": "critical",
    "OverVoltage": "critical",
    "HighTemperature": "critical",
    "PowerSwitchFailure": "critical",
    "ConnectorLockFailure": "error",
    "EVCommunicationError": "error",
    "InternalError": "error",
    "PowerMeterFailure": "error",
    "UnderVoltage": "error",
    "ReaderFailure": "warning",
    "ResetFailure": "warning",
    "OtherError": "warning",
    "WeakSignal": "warning",
    "LocalListConflict": "info",
    "NoError": "info",
    # The silence runner's fault for a box that stopped reporting.
    "OFFLINE": "error",
}


def install_default_rules(event_rule_model, severity_rule_model) -> None:
    for position, enabled, match, effect, description in EVENT_RULES:
        event_rule_model.objects.create(
            position=position, enabled=enabled, effect=effect, description=description, **match
        )
    for fault_type, severity in SEVERITIES.items():
        severity_rule_model.objects.create(fault_type=fault_type, severity=severity)
