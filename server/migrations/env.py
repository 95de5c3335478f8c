"""Alembic environment: runs on the connection :func:`server.db.migrate` passes in."""

from alembic import context
from sqlalchemy import create_engine

import server.mobile.tables

# The people tables and the passkey challenges join Base.metadata when imported.
import server.people.passkeys
import server.people.tables
import server.units.tables  # noqa: F401
from server.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    # `alembic` on the command line: PANICBUTTON_DATABASE_URL names the database.
    from server.settings import Settings

    engine = create_engine(Settings(demo=True).database_url, hide_parameters=True)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
