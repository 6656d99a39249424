"""the operator's console: deliberate deployments, history, alerts, event tickets

Revision ID: 0004
Revises: 0003

Robots used to follow a scenario's newest succeeded run; now they follow its deployed run.
Existing scenarios get their newest succeeded run deployed, so that no robot changes policy
by this upgrade.
"""
from alembic import op
import sqlalchemy as sa

from api.models import UTCDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scenarios', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deployed_run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('auto_deploy', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('tolerance', sa.Float(), server_default='0', nullable=False))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('base_run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('created_by', sa.String(length=100), server_default='', nullable=False))
        batch_op.add_column(sa.Column('deploy_on_success', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('explain', sa.JSON(), nullable=True))
    with op.batch_alter_table('robot_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('policy_run_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('open_alerts', sa.JSON(), nullable=True))

    op.create_table('history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('rule_version', sa.Integer(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    op.create_index('ix_history_scenario_id_id', 'history', ['scenario_id', 'id'], unique=False)
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('zone', sa.String(length=200), nullable=False),
    sa.Column('robots', sa.JSON(), nullable=False),
    sa.Column('penalty', sa.Float(), nullable=False),
    sa.Column('peak', sa.Float(), nullable=False),
    sa.Column('tolerance', sa.Float(), nullable=False),
    sa.Column('rule_version', sa.Integer(), nullable=False),
    sa.Column('raised_at', UTCDateTime(), nullable=False),
    sa.Column('cleared_at', UTCDateTime(), nullable=True),
    sa.Column('acknowledged_at', UTCDateTime(), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    op.create_index('ix_alerts_scenario_id_id', 'alerts', ['scenario_id', 'id'], unique=False)
    op.create_table('event_tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('robot_id', sa.String(length=100), nullable=True),
    sa.Column('token_key', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('used', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ticket_hash'),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_event_tickets_scenario_id'), 'event_tickets', ['scenario_id'], unique=False)

    # robots keep following what they followed: each scenario's newest succeeded run
    scenarios = sa.table("scenarios", sa.column("id", sa.Integer), sa.column("deployed_run_id", sa.Integer))
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("scenario_id", sa.Integer),
                    sa.column("status", sa.String))
    newest = (sa.select(sa.func.max(runs.c.id)).where(runs.c.scenario_id == scenarios.c.id,
                                                      runs.c.status == "succeeded").scalar_subquery())
    op.get_bind().execute(scenarios.update().values(deployed_run_id=newest))


def downgrade() -> None:
    op.drop_index(op.f('ix_event_tickets_scenario_id'), table_name='event_tickets')
    op.drop_table('event_tickets')
    op.drop_index('ix_alerts_scenario_id_id', table_name='alerts')
    op.drop_table('alerts')
    op.drop_index('ix_history_scenario_id_id', table_name='history')
    op.drop_table('history')
    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.drop_column('open_alerts')
    with op.batch_alter_table('robot_states', schema=None) as batch_op:
        batch_op.drop_column('policy_run_id')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('explain')
        batch_op.drop_column('deploy_on_success')
        batch_op.drop_column('created_by')
        batch_op.drop_column('base_run_id')
    with op.batch_alter_table('scenarios', schema=None) as batch_op:
        batch_op.drop_column('tolerance')
        batch_op.drop_column('auto_deploy')
        batch_op.drop_column('deployed_run_id')
