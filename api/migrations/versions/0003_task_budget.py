"""task budgets: a scenario's slack is a budget spec ("10%" or a number of task-value units),
and each run robot keeps why it was or was not replanned

Revision ID: 0003
Revises: 0002

Existing scenarios keep their number, now read as an absolute budget in task-value units.
Finished runs stored the number of rounds; a run summary now lists the rounds: an old summary
gets an empty list and keeps its count as `rounds_performed`.
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite changes a column's type by rebuilding the table: keep it AUTOINCREMENT (ids never reused)
    with op.batch_alter_table('scenarios', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.alter_column('slack', existing_type=sa.Float(), type_=sa.String(length=32), existing_nullable=False,
                              postgresql_using="slack::varchar")
    with op.batch_alter_table('run_robots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detail', sa.JSON(), nullable=True))
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("summary", sa.JSON))
    bind = op.get_bind()
    for run_id, summary in bind.execute(sa.select(runs.c.id, runs.c.summary)).all():
        if isinstance(summary, dict) and isinstance(summary.get("rounds"), int):
            summary = {**summary, "rounds_performed": summary["rounds"], "rounds": []}
            bind.execute(runs.update().where(runs.c.id == run_id).values(summary=summary))


def downgrade() -> None:
    with op.batch_alter_table('run_robots', schema=None) as batch_op:
        batch_op.drop_column('detail')
    with op.batch_alter_table('scenarios', schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.alter_column('slack', existing_type=sa.String(length=32), type_=sa.Float(), existing_nullable=False,
                              postgresql_using="rtrim(slack, '%')::double precision")
