"""indexes behind dossier search

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

"""
from typing import Sequence, Union

from alembic import op

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Search by receipt date, by desk and date, and by the start of the applicant's name."""
    op.create_index('ix_dossiers_received_at', 'dossiers', ['received_at'])
    op.create_index('ix_dossiers_agency_code_received_at', 'dossiers', ['agency_code', 'received_at'])
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE INDEX ix_dossiers_applicant_lower ON dossiers (lower(applicant_name) varchar_pattern_ops)')
    else:
        op.execute('CREATE INDEX ix_dossiers_applicant_lower ON dossiers (lower(applicant_name))')


def downgrade() -> None:
    op.drop_index('ix_dossiers_applicant_lower', 'dossiers')
    op.drop_index('ix_dossiers_agency_code_received_at', 'dossiers')
    op.drop_index('ix_dossiers_received_at', 'dossiers')
