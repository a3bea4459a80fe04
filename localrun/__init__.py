"""The one-command local run: embedded Postgres and Redis, the Asgardeo stand-in and every process of the Procfile."""
