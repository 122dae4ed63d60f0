"""The hub's PostgreSQL database: models, engine, migrations."""
