"""Settings for the CGM notification service.

Everything that differs between a laptop and production comes from the environment,
read by the small helpers below, which refuse bad values instead of guessing. In a
checkout, `make run`'s git-ignored `.env.local` fills in local mode (load_local_env).
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def load_local_env(path: Path) -> None:
    """Local mode for a checkout: `make run` writes `.env.local` (DEBUG=1 and a random
    SECRET_KEY, git-ignored), so `manage.py ...` typed by hand in that checkout runs in
    the same mode as the server. KEY=VALUE lines, `#` comments and blank lines.

    The real environment always wins: a variable already set (even to "") is left alone.
    An environment that turns DEBUG off itself (production, or a production-like run from
    a checkout, as in the e2e tests) skips the file altogether, so it still has to bring
    its own SECRET_KEY and ALLOWED_HOSTS. Production has no such file.
    """
    if not path.is_file():
        return
    debug = os.environ.get("DEBUG", "").strip().lower()
    if debug in ("0", "false", "no", "off"):
        return
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ImproperlyConfigured(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        os.environ.setdefault(name, value.strip())


# Before anything below reads the environment.
load_local_env(BASE_DIR / ".env.local")


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

# Local mode (DEBUG on: `make run`'s .env.local, the tests) gets the key from .env.local,
# or else a fixed one that says what it is.
# Production (DEBUG off) must bring its own secret and host list: no silent defaults.
SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off.")
    SECRET_KEY = "local-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS must be set in the environment when DEBUG is off."
        )
    ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_eventstream",
    "stations",
    "notifications",
    "faults",
    "access",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before CommonMiddleware, so preflight and error responses carry CORS headers too.
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cgm.urls"
ASGI_APPLICATION = "cgm.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Security -----------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    # Production runs behind TLS. CGM_ALLOW_PLAIN_HTTP=1 is for end-to-end tests and
    # closed lab networks only: it turns off secure cookies, the HTTPS redirect and HSTS.
    _tls = not env_bool("CGM_ALLOW_PLAIN_HTTP", False)
    SESSION_COOKIE_SECURE = _tls
    CSRF_COOKIE_SECURE = _tls
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _tls)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _tls else 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if env_bool("CGM_BEHIND_TLS_PROXY", False):
        # Only when a proxy that terminates TLS always sets this header itself.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Cross-origin dashboards: an explicit allow list, matched on the Origin header
# (django-eventstream's own setting matches the Referer: DESIGN.md trap 10).
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_ALLOW_CREDENTIALS = env_bool("CORS_ALLOW_CREDENTIALS", False)
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "last-event-id",
    "x-api-key",
    "x-cgm-signature",
    "x-cgm-timestamp",
    "x-csrftoken",
]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Database -------------------------------------------------------------------------
# Embedded default: a SQLite file in the checkout. DATABASE_URL selects anything else.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
        # busy_timeout instead of failing with "database is locked" when a read
        # transaction tries to upgrade (DESIGN.md trap 2).
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        # synchronous=NORMAL is safe under WAL (a power cut can lose the last commits,
        # never corrupt the file).
        # journal_mode=WAL is set once per database file (cgm/sqlite.py), not here:
        # as an init_command it ran on every new connection and took a lock each time.
        "init_command": "PRAGMA synchronous=NORMAL;",
    }
    # Reusing a thread's SQLite connection is cheap and safe; the stream's read pool is
    # bounded, so connections stay bounded too.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["TEST"] = {"NAME": env_str("CGM_TEST_SQLITE_NAME")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's psycopg pool: a server process never holds more than DB_POOL_MAX
    # connections however many streams it serves. The stream read threads
    # (CGM_SSE_DB_THREADS) and the ingest's writer keep one each; request and ingest
    # threads borrow one and give it back, never while waiting for the writer.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": env_int("DB_POOL_MIN", 2),
            "max_size": env_int("DB_POOL_MAX", 12),
            # Seconds a request waits for a connection before it fails (503): short,
            # so that a database outage is answered at once, not after a queue of waits.
            "timeout": env_int("DB_POOL_TIMEOUT", 2),
            # How long the pool keeps retrying one lost connection (with growing pauses:
            # 1, 2, 4... s) before it starts afresh on demand: short, so the service is
            # back within seconds of the database, not after a 16 s pause.
            "reconnect_timeout": env_float("DB_POOL_RECONNECT_TIMEOUT", 3.0),
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["notifications.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "notifications.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# Threads running ingest requests per process (parse, check, then wait for the writer).
CGM_INGEST_THREADS = env_int("CGM_INGEST_THREADS", 8)
# A server process loads every station, box and connector into its lookup caches before
# it serves, when there are at most this many stations (stations/lookup.py); 0: never.
CGM_LOOKUP_PRELOAD_MAX_STATIONS = env_int("CGM_LOOKUP_PRELOAD_MAX_STATIONS", 1000)
# Garbage-collector thresholds in Daphne processes (cgm/asgi.py); Python's are 700,10,10.
CGM_GC_THRESHOLDS = tuple(int(n) for n in env_list("CGM_GC_THRESHOLDS", ["50000", "20", "10"]))
# Most events one group commit stores in one transaction (notifications/group_commit.py).
CGM_INGEST_GROUP_MAX_EVENTS = env_int("CGM_INGEST_GROUP_MAX_EVENTS", 2000)
# PostgreSQL: the ingest's statements, and the reads of every stream open, are prepared
# once per connection (SQL PREPARE, cgm/pg_statements.py). Off behind any pooler in
# transaction mode (PgBouncer carries protocol-level prepared statements only, not SQL's).
CGM_PG_PREPARE = env_bool("CGM_PG_PREPARE", True)
# Per-key ingest rate (access/throttle.py, per request; a batch counts once): "N/s" or "N/m".
CGM_INGEST_RATE = env_str("CGM_INGEST_RATE", "200/s")
# How long a ?token= stream URL keeps opening (EventSource reconnects with it), while
# its issuer keeps access and its login session is not logged out (access/tokens.py).
CGM_STREAM_TOKEN_SECONDS = env_int("CGM_STREAM_TOKEN_SECONDS", 24 * 3600)
# After a failed database connection, calls fail at once (503) for this long before the
# database is tried again (cgm/db_health.py).
CGM_DB_RETRY_SECONDS = env_float("CGM_DB_RETRY_SECONDS", 1.0)
# How often each process checks whether access was taken away from open streams.
CGM_ACCESS_RECHECK_SECONDS = env_int("CGM_ACCESS_RECHECK_SECONDS", 2)

# --- Fan-out between processes, and the shared cache ------------------------------------
# REDIS_URL: every process publishes each notification to Redis and forwards what the
# others publish to its own streams (notifications/fanout.py). Without it, fan-out is
# in-process (the embedded default, one Daphne).
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# GRIP_URL: the publish endpoint of each Pushpin node, comma-separated (e.g.
# http://127.0.0.1:5561?iss=pushpin&key=...). Pushpin then holds the client connections,
# Django answers stream requests with GRIP instructions, and every node gets every
# publish (docs/SCALING.md).
GRIP_URLS = env_list("GRIP_URL", [])
# Seconds between Pushpin's safety-net refetches of a held stream's next link.
CGM_GRIP_REFRESH_SECONDS = env_int("CGM_GRIP_REFRESH_SECONDS", 600)
# Largest body of one publish request to Pushpin. Pushpin refuses a body over its
# push_in_http_max_body_size (1,000,000 bytes in deploy/pushpin/pushpin.conf.template),
# and a relay that fell behind reads a page of entries at once: bigger ones are split,
# in order (notifications/push/pushpin.py).
CGM_PUSHPIN_PUBLISH_MAX_BYTES = env_int("CGM_PUSHPIN_PUBLISH_MAX_BYTES", 900_000)
# The Pushpin relay's own database connection (notifications/push/pushpin_relay.py):
# it LISTENs and holds a session advisory lock, which a pooler in transaction mode
# (PgBouncer) does not carry: set it to reach PostgreSQL itself when DATABASE_URL goes
# through one (the relay checks, and says so). Empty: where DATABASE_URL points.
CGM_RELAY_DATABASE_URL = env_str("CGM_RELAY_DATABASE_URL", "")
# Seconds a server process waits, without a Pushpin relay, before its own standby
# takes the role (notifications/push/pushpin_relay.py): the relay is normally a
# process of its own, `manage.py pushpin_relay`.
CGM_RELAY_STANDBY_SECONDS = env_float("CGM_RELAY_STANDBY_SECONDS", 5.0)
if GRIP_URLS:
    from gripcontrol import parse_grip_uri

    # django_grip checks each request's Grip-Sig against every node's key (its
    # middleware runs in the stream door: notifications/streams/door.py).
    GRIP_PROXIES = [parse_grip_uri(url) for url in GRIP_URLS]

# --- Event stream -------------------------------------------------------------------------
# Who may read a station's channel: the project's policy, also for django-eventstream's
# own helpers (notifications/streams/channels.py). Delivery and the log are the
# project's own (docs/EVENT_FLOW.md).
EVENTSTREAM_CHANNELMANAGER_CLASS = "notifications.streams.channels.StationChannelManager"

# Body limit for POST /api/event (bytes) and events per batch.
CGM_INGEST_MAX_BODY_BYTES = env_int("CGM_INGEST_MAX_BODY_BYTES", 1024 * 1024)
CGM_INGEST_MAX_BATCH = env_int("CGM_INGEST_MAX_BATCH", 1000)
# Extra fields (beyond the modelled ones) of one event: nesting levels, and their size
# as JSON (notifications/ingest/storable.py).
CGM_INGEST_MAX_DEPTH = env_int("CGM_INGEST_MAX_DEPTH", 16)
CGM_INGEST_MAX_EXTRA_BYTES = env_int("CGM_INGEST_MAX_EXTRA_BYTES", 16 * 1024)
# Stream tuning: heartbeats well under the 60 s idle timeout of common proxies.
CGM_SSE_HEARTBEAT_SECONDS = env_int("CGM_SSE_HEARTBEAT_SECONDS", 15)
CGM_SSE_RETRY_MS = env_int("CGM_SSE_RETRY_MS", 3000)
# Behind Pushpin a stream holds these plus 2 channels: deploy/pushpin/pushpin.conf.template
# allows 600 per connection, and Pushpin silently drops any past that.
CGM_SSE_MAX_STATIONS = env_int("CGM_SSE_MAX_STATIONS", 500)
CGM_SSE_REPLAY_PAGE = env_int("CGM_SSE_REPLAY_PAGE", 500)
# Threads (and so DB connections) shared by all open streams for their log reads.
CGM_SSE_DB_THREADS = env_int("CGM_SSE_DB_THREADS", 4)
# The kernel's send buffer per connection (SO_SNDBUF; Linux doubles it). Left to
# itself Linux grows it to several MB for a client that stops reading, before the
# backlog limit below even starts counting (cgm/server.py).
CGM_SOCKET_SEND_BUFFER_BYTES = env_int("CGM_SOCKET_SEND_BUFFER_BYTES", 128 * 1024)
# Reply bytes a connection may have waiting once its client stops reading (past
# Twisted's own 64 KiB send buffer), before it is disconnected (cgm/server.py): the
# client resumes from its cursor when it reads again.
CGM_SSE_MAX_BACKLOG_BYTES = env_int("CGM_SSE_MAX_BACKLOG_BYTES", 1024 * 1024)
# Events queued per stream and station before the stream catches up from the log
# (notifications/push/local.py).
CGM_SSE_MAX_PENDING = env_int("CGM_SSE_MAX_PENDING", 200)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django_eventstream": {"level": "WARNING"}},
}

# Daphne serves static files itself in the embedded default (see cgm/urls.py).
CGM_SERVE_STATIC = env_bool("CGM_SERVE_STATIC", True)
DATA_UPLOAD_MAX_MEMORY_SIZE = CGM_INGEST_MAX_BODY_BYTES
