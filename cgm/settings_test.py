"""Settings for the test suite: local mode, whatever the shell exports."""

import os

os.environ.setdefault("DEBUG", "1")

from cgm.settings import *  # noqa: E402,F403

# Tests create many users: a fast hasher keeps that from dominating the suite.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
