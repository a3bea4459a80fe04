# One image for every process; docker-compose picks the command of each from the Procfile.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY pyproject.toml README.md ./
COPY web ./web
COPY tasks ./tasks
COPY models ./models
COPY localrun ./localrun
COPY asgardeo_standin ./asgardeo_standin
COPY migrations ./migrations
COPY celeryconfig.py alembic.ini Procfile ./
RUN pip install . && chown -R app /app

USER app
EXPOSE 5000 5555
CMD ["sh", "-c", "gunicorn --bind ${WEB_BIND:-0.0.0.0:${PORT:-5000}} --worker-class gthread --workers ${WEB_CONCURRENCY:-2} --threads ${WEB_THREADS:-8} --timeout 60 --graceful-timeout 30 --access-logfile - 'web:create_app()'"]
