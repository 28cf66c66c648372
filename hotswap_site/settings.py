"""Hotswap's Django settings: one file, every deploy-time value from the environment.

The defaults run the laptop demo (DEBUG on, SQLite under run/, Redis on localhost).
Production sets at least DEBUG=off, SECRET_KEY, HOTSWAP_FLEET_KEY, ALLOWED_HOSTS,
DATABASE_URL and REDIS_URL; see the Configuration table in README.md. A malformed value
stops start-up with the variable's name (hotswap_site/env.py); values that are
well-formed but unwise together are reported by system checks (swaps/checks.py).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from hotswap_site.env import (
    env_bool,
    env_choice,
    env_database,
    env_fleet_keys,
    env_int,
    env_key_prefix,
    env_list,
    env_required,
    env_seconds,
    env_str,
)
from swaps.logs import LOG_FORMATS, LOG_LEVELS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", default=True)

# Only ever used with DEBUG on, where nothing signed with it leaves the laptop.
DEV_SECRET_KEY = "django-insecure-hotswap-dev-key-for-the-laptop-demo-only"
if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", default=DEV_SECRET_KEY)
else:
    SECRET_KEY = env_required("SECRET_KEY", reason="when DEBUG is off")

# Seals what the fleet keeps in Redis (specs, routes, desired versions, quarantines):
# every console, worker and replica process holds the same one, and Redis never sees it.
DEV_FLEET_KEY = "hotswap-insecure-dev-fleet-key-for-the-laptop-only"
HOTSWAP_FLEET_KEYS = env_fleet_keys(default=DEV_FLEET_KEY if DEBUG else "")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Pytest imports these settings in-process. The test overrides all hang on this flag:
# plain static storage (tests render pages without collectstatic), a file-backed SQLite
# test database, and no fleet republish when the ASGI app is imported.
TESTING = "pytest" in sys.modules

# --- Hotswap ----------------------------------------------------------------------------

# Every Redis key Hotswap writes (routes, heartbeats, channel layer) starts with this,
# so several deployments or test runs can share one Redis. RQ's own keys keep RQ's
# fixed "rq:" prefix; give each deployment its own Redis database for those.
HOTSWAP_NAMESPACE = env_key_prefix("HOTSWAP_NAMESPACE", default="hotswap")
HOTSWAP_DRAIN_TIMEOUT = env_seconds("HOTSWAP_DRAIN_TIMEOUT", default=30.0)
HOTSWAP_KEEP_WARM = env_seconds("HOTSWAP_KEEP_WARM", default=300.0, allow_zero=True)
HOTSWAP_HEARTBEAT_INTERVAL = env_seconds("HOTSWAP_HEARTBEAT_INTERVAL", default=0.5)
HOTSWAP_HEARTBEAT_TTL = env_seconds("HOTSWAP_HEARTBEAT_TTL", default=3.0)
HOTSWAP_MAX_BODY_BYTES = env_int("HOTSWAP_MAX_BODY_BYTES", default=8 * 1024 * 1024, minimum=1)
HOTSWAP_RUN_DIR = Path(env_str("HOTSWAP_RUN_DIR", default=str(BASE_DIR / "run"))).resolve()
HOTSWAP_RUN_DIR.mkdir(parents=True, exist_ok=True)
# How long the control plane waits for every live replica to apply a route flip, and
# to load and health-check a version, before it gives up (and restores the route).
HOTSWAP_ACK_TIMEOUT = env_seconds("HOTSWAP_ACK_TIMEOUT", default=10.0)
HOTSWAP_LOAD_TIMEOUT = env_seconds("HOTSWAP_LOAD_TIMEOUT", default=120.0)
# Whoever runs a swap or rollback holds a lease in Redis, renewed every third of this;
# a lease that lapses means its runner died, and the recovery sweep takes over.
HOTSWAP_LEASE_TTL = env_seconds("HOTSWAP_LEASE_TTL", default=10.0)
# How often each RQ worker looks for operations whose runner died (and for a Redis
# that came back empty); it also looks when it starts.
HOTSWAP_SWEEP_INTERVAL = env_seconds("HOTSWAP_SWEEP_INTERVAL", default=60.0)
# The RQ queue swap, rollback and recovery jobs go to (RQ_QUEUES below).
HOTSWAP_RQ_QUEUE = env_key_prefix("HOTSWAP_RQ_QUEUE", default="swaps")
# Where version artifacts may lie (every replica reads them at the same paths); a path
# outside them, or a symlink leading out, is refused at registration as "not allowed".
HOTSWAP_ARTIFACT_ROOTS = tuple(
    str(Path(root).resolve())
    for root in env_list("HOTSWAP_ARTIFACT_ROOTS", default=[str(HOTSWAP_RUN_DIR / "models")])
)
# Packages (e.g. "acme_models") whose python factories anyone who may register
# versions may register; every other python factory, and every pickle, needs the
# swaps.register_code permission: loading them runs their code.
HOTSWAP_CODE_MODULES = tuple(env_list("HOTSWAP_CODE_MODULES", default=[]))
# If set, GET /metrics on the console needs it as a bearer token (Prometheus'
# `authorization` scrape setting); unset, the metrics are open, like a replica's.
HOTSWAP_METRICS_TOKEN = env_str("HOTSWAP_METRICS_TOKEN", default="")
# The console process also serves V2 inference under /v2 (a one-process setup): it
# then loads models, which are untrusted code, beside SECRET_KEY and the database.
HOTSWAP_CONSOLE_V2 = env_bool("HOTSWAP_CONSOLE_V2", default=False)
# Largest JSON body the control-plane API reads; larger ones get 413.
HOTSWAP_API_MAX_BODY_BYTES = env_int("HOTSWAP_API_MAX_BODY_BYTES", default=64 * 1024, minimum=1)
# Web and worker processes republish routes and desired versions from the database when
# they start. Tests start their own fleets, so importing the ASGI app must not.
HOTSWAP_REPUBLISH_ON_START = env_bool("HOTSWAP_REPUBLISH_ON_START", default=not TESTING)

# --- Applications -------------------------------------------------------------------------

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's so `manage.py runserver` speaks ASGI.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_rq",
    "template_partials",
    # Sign-in throttling: failed attempts are counted per username and address.
    "axes",
    "swaps",
]

MIDDLEWARE = [
    "swaps.control_metrics.MetricsEndpoint",  # before the host check: swaps/control_metrics.py
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "swaps.csp.ContentSecurityPolicy",
    # Last, as django-axes asks: it turns a locked-out sign-in into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hotswap_site.urls"
ASGI_APPLICATION = "hotswap_site.asgi.application"

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
                "swaps.console.viewer",
            ],
        },
    },
]

# --- Data -------------------------------------------------------------------------------

DATABASES = {
    "default": env_database("DATABASE_URL", default=f"sqlite:///{HOTSWAP_RUN_DIR / 'db.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs daphne and an RQ worker on one SQLite file: WAL lets readers run
    # beside a writer, and IMMEDIATE transactions wait for the write lock up front
    # instead of failing with "database is locked" halfway through.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    if TESTING:
        # A file, not SQLite's in-memory test database: the RQ worker processes that
        # integration tests start must read the same rows. One per test run, so two
        # runs in one checkout never share (and delete) each other's.
        DATABASES["default"]["TEST"] = {
            "NAME": str(HOTSWAP_RUN_DIR / f"test-{os.getpid()}.sqlite3")
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", default="redis://127.0.0.1:6379/0")

# Unit tests run consumers and broadcasts in one process: the in-memory layer keeps them
# off Redis. Processes that tests start (console, worker) are not under pytest: Redis.
CHANNEL_LAYER = env_choice(
    "CHANNEL_LAYER", choices=["redis", "memory"], default="memory" if TESTING else "redis"
)
if CHANNEL_LAYER == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis, its messages encrypted and authenticated (swaps/channel_layer.py).
            "BACKEND": "swaps.channel_layer.SealedChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": f"{HOTSWAP_NAMESPACE}:asgi",
                "symmetric_encryption_keys": [SECRET_KEY],
            },
        }
    }

# Jobs are stored as JSON, never as pickles a writer of Redis could forge (swaps/job_queue.py).
RQ_SERIALIZER = "rq.serializers.JSONSerializer"
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 360, "SERIALIZER": RQ_SERIALIZER},
    # Swap and rollback jobs wait out a drain, so they may run well past the drain timeout.
    HOTSWAP_RQ_QUEUE: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600, "SERIALIZER": RQ_SERIALIZER},
}
RQ = {
    # A worker runs only Hotswap's own job functions, whatever a queued job names.
    "JOB_CLASS": "swaps.jobs.HotswapJob",
    # A job enqueued inside a transaction must not start before the rows it reads exist.
    "COMMIT_MODE": "on_db_commit",
    # `manage.py rqworker` sweeps for orphaned swaps at start and every sweep interval.
    "WORKER_CLASS": "swaps.worker.SweepingWorker",
}

# --- Auth -------------------------------------------------------------------------------

# django-axes first: a locked-out username and address is refused before any password
# is checked. API tokens are not passwords (swaps/tokens.py) and are not throttled here.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# After this many failed sign-ins for one username from one address, that pair is
# refused for HOTSWAP_LOGIN_LOCKOUT seconds (`manage.py axes_reset_username NAME` lifts it).
AXES_FAILURE_LIMIT = env_int("HOTSWAP_LOGIN_ATTEMPTS", default=5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_seconds("HOTSWAP_LOGIN_LOCKOUT", default=900.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# The client's address is the connection's, unless a proxy (the one SECURE_PROXY_SSL_HEADER
# says is there) adds it to X-Forwarded-For: a client could send that header itself and
# get a fresh address, and fresh attempts, each time.
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- I18n -------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# The app serves its own static files (the console must work with no web server or CDN
# in front): WhiteNoise, right after SecurityMiddleware. With DEBUG on (and in tests) it
# reads them straight from static/ through the finders, so no collectstatic is needed;
# in production daphne serves the hashed, compressed files collected at build time.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
WHITENOISE_USE_FINDERS = DEBUG or TESTING
WHITENOISE_AUTOREFRESH = DEBUG or TESTING
if DEBUG or TESTING:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
else:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# --- Security (production) --------------------------------------------------------------

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# A console session lasts a working day, not Django's two weeks: a laptop left signed
# in somewhere holds an operator's rights for that long at most.
SESSION_COOKIE_AGE = int(env_seconds("HOTSWAP_SESSION_SECONDS", default=12 * 3600.0))
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# HSTS is sticky in browsers for its whole lifetime, so it is the operator's decision,
# never a default.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", default=0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
# Trusting X-Forwarded-Proto is only safe behind a proxy that always sets it.
if env_bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The address the proxy appended, the right-most: anything left of it the client sent.
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
    AXES_IPWARE_PROXY_COUNT = 1
    AXES_IPWARE_PROXY_ORDER = "right-most"

# --- Logging ----------------------------------------------------------------------------

# Every process kind logs the same way (swaps/logs.py): to stderr, as plain text or as
# one JSON object per line. Replicas, which run without these settings, read the same
# two variables.
LOG_LEVEL = env_choice("LOG_LEVEL", choices=LOG_LEVELS, default="INFO")
LOG_FORMAT = env_choice("LOG_FORMAT", choices=LOG_FORMATS, default="text")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
