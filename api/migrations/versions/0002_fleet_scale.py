"""the service at fleet scale: ids never reused, latest states and monitor counters, background
fleet plans, change feed, service processes, token expiry

Revision ID: 0002
Revises: 0001

SQLite reuses the largest id after a delete unless a table is AUTOINCREMENT, which only
CREATE TABLE can say: the existing tables are rebuilt (batch mode copies their rows). That
needs foreign keys off, or dropping the old `scenarios` would cascade to every child row:
api.db.migrate turns them off around the upgrade and checks them afterwards.
"""
from alembic import op
import sqlalchemy as sa

from api.models import UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

OLD_TABLES = ("scenarios", "rule_versions", "runs", "run_robots", "observations", "robot_tokens")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # parents first; each rebuild keeps the rows, their ids and the sqlite_sequence
        # starts at the largest id present
        for table in OLD_TABLES:
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass

    with op.batch_alter_table('scenarios', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('robot_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', UTCDateTime(), nullable=True))
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index('ix_observations_robot_id')
        batch_op.drop_index('ix_observations_scenario_id')
        batch_op.create_index('ix_observations_scenario_id_id', ['scenario_id', 'id'], unique=False)
        batch_op.create_index('ix_observations_scenario_id_received_at', ['scenario_id', 'received_at'], unique=False)

    op.create_table('robot_states',
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('robot_id', sa.String(length=100), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('state_index', sa.Integer(), nullable=False),
    sa.Column('zone', sa.Integer(), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scenario_id', 'robot_id')
    )
    op.create_table('monitors',
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('observations', sa.Integer(), nullable=False),
    sa.Column('nse_observations', sa.Integer(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('since', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scenario_id')
    )
    op.create_table('fleet_plans',
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('phase', sa.String(length=20), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('robots', sa.JSON(), nullable=True),
    sa.Column('nbytes', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scenario_id')
    )
    with op.batch_alter_table('fleet_plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fleet_plans_status'), ['status'], unique=False)
    op.create_table('fleet_parts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scenario_id', 'position'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('fleet_parts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fleet_parts_scenario_id'), ['scenario_id'], unique=False)
    op.create_table('changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('ref', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_changes_created_at'), ['created_at'], unique=False)
    op.create_table('service_processes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('heartbeat_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    locks = op.create_table('service_locks',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('taken_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.bulk_insert(locks, [{"name": "startup", "taken_at": None}])

    # scenarios made before this revision: their live monitor starts afresh (an empty count
    # table, '[]', is all zeros) and their fleet is planned in the background like a new one's
    op.execute("INSERT INTO monitors (scenario_id, observations, nse_observations, counts, since) "
               "SELECT id, 0, 0, '[]', created_at FROM scenarios")
    op.execute("INSERT INTO fleet_plans (scenario_id, status, phase, progress, attempts, nbytes, created_at) "
               "SELECT id, 'queued', 'queued', 0, 0, 0, created_at FROM scenarios")


def downgrade() -> None:
    op.drop_table('service_locks')
    op.drop_table('service_processes')
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_changes_created_at'))
    op.drop_table('changes')
    with op.batch_alter_table('fleet_parts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fleet_parts_scenario_id'))
    op.drop_table('fleet_parts')
    with op.batch_alter_table('fleet_plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fleet_plans_status'))
    op.drop_table('fleet_plans')
    op.drop_table('monitors')
    op.drop_table('robot_states')
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index('ix_observations_scenario_id_received_at')
        batch_op.drop_index('ix_observations_scenario_id_id')
        batch_op.create_index('ix_observations_scenario_id', ['scenario_id'], unique=False)
        batch_op.create_index('ix_observations_robot_id', ['robot_id'], unique=False)
    with op.batch_alter_table('robot_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('owner_id')
    with op.batch_alter_table('scenarios', schema=None) as batch_op:
        batch_op.drop_column('revision')
