"""Bump the access revision whenever access may have been taken away.

Streams in every process re-check their callers when the revision moves
(access/revocation.py), so this must catch every path: assignments, group
membership, user deactivation or demotion, key revocation or narrowing.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from access.models import AccessRevision, ApiKey, StationAccess
from access.policy import forget_cached_keys


def bump_after_commit(**kwargs):
    forget_cached_keys()
    transaction.on_commit(AccessRevision.bump)


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
    bump_after_commit()
