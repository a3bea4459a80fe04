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
COPY celeryconfig.py gunicorn.conf.py alembic.ini Procfile ./
RUN pip install . && chown -R app /app

USER app
EXPOSE 5000 5555
CMD ["sh", "-c", "gunicorn --config gunicorn.conf.py 'web:create_app()'"]
