"""Alembic environment for Knight's schema; run programmatically by knight.store.migrate.

Knight passes its own open connection in `config.attributes["connection"]` so migrations run inside
the transaction (and with the SQLite settings) that knight.store.migrate prepared. The alembic
command line (`alembic -c knight/store/alembic.ini ...`, for writing new revisions) connects itself.
"""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine

from knight.store.models import Base

config = context.config


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations (or the stamp) on an open connection."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit the migration SQL as text (`alembic upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    # Only the alembic command line gets here; a library must not reconfigure the app's logging.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    engine = create_engine(config.get_main_option("sqlalchemy.url", "sqlite:///knight.db"))
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()
