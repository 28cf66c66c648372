# One image for every Hotswap role; the command picks the role.
#
#   web (console, admin, API, websockets) — the default CMD:
#       daphne --bind 0.0.0.0 --port 8000 hotswap_site.asgi:application
#     Behind a load balancer that sets X-Forwarded-For/-Proto, add --proxy-headers and
#     set SECURE_PROXY_SSL_HEADER=on.
#   replica (serves V2 inference under /v2; needs REDIS_URL, not the database):
#       python -m swaps.replica --host 0.0.0.0 --port 8001 --grpc-port 9001
#     scaled out behind the load balancer (README, "Serving").
#   worker (runs swap, drain and recovery jobs; at start and every HOTSWAP_SWEEP_INTERVAL
#   it also recovers swaps whose runner died, and republishes routes from the database):
#       python manage.py rqworker swaps default
#   migrate (one-off, before starting a new release):
#       python manage.py migrate --noinput
#
# Required at run time (DEBUG is off in this image): SECRET_KEY, ALLOWED_HOSTS,
# DATABASE_URL (PostgreSQL; the SQLite default lives inside the container and is lost
# with it), REDIS_URL. See the Configuration table in README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, read from pyproject.toml, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
# Editable, so settings find templates/ and static/ beside the code in /app.
RUN pip install --no-deps -e . \
    && DEBUG=off SECRET_KEY=used-only-to-collect-static-files python manage.py collectstatic --noinput \
    && useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin hotswap \
    && mkdir -p run \
    && chown hotswap run

ENV DEBUG=off
USER hotswap
EXPOSE 8000
CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "hotswap_site.asgi:application"]
