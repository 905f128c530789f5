"""The admin's rules, read for the ingest: what an event does, and a new fault's severity.

Read from the database at most every CACHE_SECONDS per process (every ingest group
consults them; they change rarely); a change saved in this process is seen at once
(signals below), other processes see it within CACHE_SECONDS.
"""

import threading
import time
from dataclasses import dataclass

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from faults.models import EventRule, Severity, SeverityRule

CACHE_SECONDS = 5.0
DEFAULT_SEVERITY = Severity.ERROR  # unmapped fault types: loud rather than quiet


def type_key(fault_type: str) -> str:
    """Fault types compare without case, '_', '-' or spaces: NO_ERROR is NoError."""
    return "".join(ch for ch in fault_type.lower() if ch not in "_- ")


@dataclass(frozen=True)
class _Rule:
    type_key: str
    code: str
    action: str
    status: str
    cleared: bool
    effect: str

    def matches(self, type_key_: str, code: str, action: str, status: str, cleared: bool) -> bool:
        return (
            (not self.type_key or self.type_key == type_key_)
            and (not self.code or self.code == code)
            and (not self.action or self.action == action)
            and (not self.status or self.status == status)
            and (not self.cleared or cleared)
        )


class Rules:
    def __init__(self, event_rules: list[EventRule], severity_rules: list[SeverityRule]):
        self._rules = [
            _Rule(type_key(r.fault_type), r.code, r.action, r.status, r.cleared, r.effect)
            for r in event_rules
            if r.enabled
        ]
        self._severity = {(type_key(r.fault_type), r.code): r.severity for r in severity_rules}
        # Answers by event shape: a batch repeats a handful of shapes many times.
        self._effects: dict[tuple, str] = {}

    def effect(self, *, fault_type: str, code: str, action: str, status: str, cleared: bool) -> str:
        shape = (fault_type, code, action, status, cleared)
        effect = self._effects.get(shape)
        if effect is None:
            effect = self._effects[shape] = self._first_match(*shape)
        return effect

    def _first_match(self, fault_type, code, action, status, cleared) -> str:
        key = type_key(fault_type)
        for rule in self._rules:
            if rule.matches(key, code, action, status, cleared):
                return rule.effect
        return EventRule.Effect.FAULT

    def severity(self, fault_type: str, code: str) -> str:
        key = type_key(fault_type)
        return self._severity.get((key, code)) or self._severity.get((key, "")) or DEFAULT_SEVERITY


_lock = threading.Lock()
_cached: tuple[float, Rules] | None = None


def current_rules() -> Rules:
    global _cached
    now = time.monotonic()
    with _lock:
        if _cached is not None and _cached[0] > now:
            return _cached[1]
    rules = Rules(list(EventRule.objects.all()), list(SeverityRule.objects.all()))
    with _lock:
        _cached = (now + CACHE_SECONDS, rules)
    return rules


def forget_rules() -> None:
    global _cached
    with _lock:
        _cached = None


@receiver(post_save, sender=EventRule, dispatch_uid="faults-rules-saved")
@receiver(post_delete, sender=EventRule, dispatch_uid="faults-rules-deleted")
@receiver(post_save, sender=SeverityRule, dispatch_uid="faults-severity-saved")
@receiver(post_delete, sender=SeverityRule, dispatch_uid="faults-severity-deleted")
def _rules_changed(**kwargs):
    forget_rules()
