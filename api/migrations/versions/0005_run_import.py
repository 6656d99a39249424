"""imported runs: a policy file made a run (POST /api/v1/scenarios/{id}/runs/import)

Revision ID: 0005
Revises: 0004

Two nullable columns of `runs`: `imported` (what an imported run imported: learner label,
entries, robots per kind of entry) and `import_document` (the policy file, which the run
worker deploys on the planned fleet). Existing runs are mitigation runs: both stay null.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('imported', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('import_document', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('import_document')
        batch_op.drop_column('imported')
