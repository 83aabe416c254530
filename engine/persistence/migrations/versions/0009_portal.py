"""national public service portal: dossier mapping, feed cursor, ordered outbox index

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'portal_dossiers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ma_ho_so', sa.String(length=64), nullable=False),
        sa.Column('dossier_id', sa.Integer(), nullable=True),
        sa.Column('dossier_code', sa.String(length=64), nullable=True),
        sa.Column('procedure_code', sa.String(length=64), nullable=False),
        sa.Column('agency_code', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_portal_dossiers_dossier_id_dossiers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_dossiers')),
        sa.UniqueConstraint('dossier_id', name=op.f('uq_portal_dossiers_dossier_id')),
        sa.UniqueConstraint('ma_ho_so', name=op.f('uq_portal_dossiers_ma_ho_so')),
    )
    op.create_table(
        'portal_feed_cursor',
        sa.Column('name', sa.String(length=30), nullable=False),
        sa.Column('last_event_id', sa.Integer(), nullable=False),
        sa.Column('waiting_below', sa.Integer(), nullable=True),
        sa.Column('waiting_horizon', sa.BigInteger(), nullable=True),
        sa.Column('waiting_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_portal_feed_cursor')),
    )
    op.create_index('ix_outbox_channel_dossier', 'outbox', ['channel', 'dossier_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_channel_dossier', table_name='outbox')
    op.drop_table('portal_feed_cursor')
    op.drop_table('portal_dossiers')
