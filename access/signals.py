"""Bump the access revision whenever access may have been taken away.

Streams in every process re-check their callers when the revision moves
(access/revocation.py), so this must catch every path: assignments, group
membership, user deactivation or demotion, key revocation or narrowing.

Behind Pushpin (GRIP_URL) the streams are held by Pushpin, not by a Django process,
so nothing would re-check them until Pushpin next calls Django. There, the callers
concerned get their streams closed (notifications/grip.py, close_streams_of): their
clients reconnect with Last-Event-ID, and Django checks their access again.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver
from django.utils import timezone

from access.models import AccessRevision, ApiKey, StationAccess, StreamGrant
from access.policy import Principal, forget_cached_keys


def bump_after_commit(sender=None, instance=None, **kwargs):
    forget_cached_keys()
    transaction.on_commit(AccessRevision.bump)
    if settings.GRIP_URLS and instance is not None:
        principals = _principals_concerned(sender, instance, kwargs)
        if principals:
            transaction.on_commit(lambda: _close_pushpin_streams(principals))


def _close_pushpin_streams(principals) -> None:
    from notifications.push.pushpin import close_streams_of  # notifications depends on access

    close_streams_of(principals)


def _principals_concerned(sender, instance, kwargs) -> set[Principal]:
    """The callers whose access this change may have narrowed."""
    if isinstance(instance, ApiKey):
        return {Principal("key", instance.pk)}
    if isinstance(instance, User):
        return {Principal("user", instance.pk)}
    if isinstance(instance, Group):
        # Membership changed from the group's side (pk_set: users), or the group is gone.
        if sender is User.groups.through:
            user_ids = kwargs.get("pk_set") or []
        else:
            user_ids = _members.pop(instance.pk, [])
        return {Principal("user", pk) for pk in user_ids}
    if isinstance(instance, StationAccess):
        if instance.user_id is not None:
            return {Principal("user", instance.user_id)}
        if instance.group_id is not None:
            members = User.objects.filter(groups=instance.group_id).values_list("pk", flat=True)
            return {Principal("user", pk) for pk in members}
    if sender is ApiKey.stations.through:
        return {Principal("key", pk) for pk in kwargs.get("pk_set") or []}
    return set()


# A deleted group's members, noted before the delete empties the membership table.
_members: dict[int, list[int]] = {}


@receiver(pre_delete, sender=Group, dispatch_uid="access-group-members")
def note_group_members(sender, instance, **kwargs):
    if settings.GRIP_URLS:
        _members[instance.pk] = list(instance.user_set.values_list("pk", flat=True))


User = get_user_model()

for sender in (StationAccess, ApiKey, Group, User):
    post_delete.connect(bump_after_commit, sender=sender, dispatch_uid=f"access-del-{sender}")
post_save.connect(bump_after_commit, sender=StationAccess, dispatch_uid="access-save-assign")
post_save.connect(bump_after_commit, sender=ApiKey, dispatch_uid="access-save-key")
m2m_changed.connect(bump_after_commit, sender=ApiKey.stations.through, dispatch_uid="access-keym2m")
m2m_changed.connect(bump_after_commit, sender=User.groups.through, dispatch_uid="access-groups")


@receiver(post_save, sender=User, dispatch_uid="access-save-user")
def user_saved(sender, instance, update_fields=None, **kwargs):
    # A login only stamps last_login: no access change, no re-check of every stream.
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    bump_after_commit(sender, instance)


@receiver(user_logged_out, dispatch_uid="access-logout")
def logged_out(sender, request, user, **kwargs):
    """A logout ends that session's streams and its stream tokens, in every process:
    the grants are ended now, and the revision bump makes every process re-check its
    streams (a stream bound to a session that no longer exists loses every station)."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        StreamGrant.objects.filter(session_key=session_key, ended_at__isnull=True).update(
            ended_at=timezone.now()
        )
    bump_after_commit(User, user)
