"""LeadOps settings, read from the environment (and a `.env` file) with django-environ.

A malformed variable stops start-up with its name: django-environ raises ImproperlyConfigured.
"""

import os
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost", "testserver"]),
    TIME_ZONE=(str, "UTC"),
    REDIS_URL=(str, ""),
    EMAIL_URL=(str, "consolemail://"),
    # `make run` offers its own address as the default (DEFAULT_SITE_URL); SITE_URL, set or in .env, wins.
    SITE_URL=(str, os.environ.get("DEFAULT_SITE_URL", "http://127.0.0.1:8000")),
    INTAKE_MAX_UPLOAD_MB=(int, 50),
    Q_SYNC=(bool, False),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env("DEBUG")
# pytest (8.2+) sets PYTEST_VERSION for the whole session; importing pytest elsewhere does not.
TESTING = "PYTEST_VERSION" in os.environ
# Commands that never sign anything (schema and static checks) run without a real key.
OFFLINE_COMMAND = sys.argv[1:2] in (["makemigrations"], ["check"], ["collectstatic"], ["showmigrations"])
# A fixed development key is only acceptable in development and tests; production must set SECRET_KEY.
SECRET_KEY = env(
    "SECRET_KEY", default="dev-only-insecure-key" if DEBUG or TESTING or OFFLINE_COMMAND else environ.Env.NOTSET
)
ALLOWED_HOSTS = env("ALLOWED_HOSTS")
SITE_URL = env("SITE_URL").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_filters",
    "django_htmx",
    "django_q",
    "ninja",  # serves the API docs page's Swagger UI from our static files, not from a CDN
    "template_partials",
    "leadops.apps.LeadOpsConfig",
    "reps",
    "routing",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "leadops.urls"

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
                "leadops.roles.roles_context",
            ],
        },
    },
]

WSGI_APPLICATION = "leadops.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the web server and the django-q2 worker share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            # Take the write lock when a transaction starts, so a transaction that reads then
            # writes never fails half-way with "database is locked" against the worker.
            "transaction_mode": "IMMEDIATE",
        }
    )
else:
    # In production keep connections between requests (unless the URL says otherwise, e.g.
    # `?conn_max_age=0` behind PgBouncer): a new connection per request costs a handshake and
    # re-prepares the claim statement (routing/pools.py), most of a claim's database time. Not
    # under DEBUG: runserver starts a thread per request, which would each keep a connection.
    DATABASES["default"].setdefault("CONN_MAX_AGE", 0 if DEBUG else 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Behind HTTPS in production (DEBUG off): cookies only over TLS, trust the proxy's scheme header.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not (DEBUG or TESTING))
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = BASE_DIR / "media"
MEDIA_URL = "media/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_CONFIG = env.email_url("EMAIL_URL")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="LeadOps <leadops@localhost>")

INTAKE_MAX_UPLOAD_BYTES = env("INTAKE_MAX_UPLOAD_MB") * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

REDIS_URL = env("REDIS_URL")
Q_CLUSTER = {
    "name": "leadops",
    "workers": 2,
    "timeout": 120,
    "retry": 180,
    "max_attempts": 3,
    "queue_limit": 100,
    "bulk": 10,
    "poll": 0.2,
    "catch_up": False,
    "sync": env("Q_SYNC"),
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"leadops": {"level": "INFO"}, "routing": {"level": "INFO"}},
}

if TESTING:
    # Hashing demo and factory passwords with PBKDF2 would dominate the test run's time.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
