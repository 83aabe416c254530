"""fees of a dossier (phí, lệ phí) and their payments

Revision ID: 0011
Revises: 0009
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'dossier_fees',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dossier_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=64), nullable=False),
        sa.Column('label', sa.String(length=300), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_dossier_fees_dossier_id_dossiers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dossier_fees')),
        sa.UniqueConstraint('dossier_id', 'code', name=op.f('uq_dossier_fees_dossier_id_code')),
    )
    op.create_table(
        'fee_payments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dossier_id', sa.Integer(), nullable=False),
        sa.Column('fee_id', sa.Integer(), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('method', sa.String(length=20), nullable=False),
        sa.Column('agency_code', sa.String(length=64), nullable=False),
        sa.Column('receipt_number', sa.String(length=64), nullable=False),
        sa.Column('transaction_id', sa.String(length=64), nullable=True),
        sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recorded_by', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_fee_payments_dossier_id_dossiers')),
        sa.ForeignKeyConstraint(['fee_id'], ['dossier_fees.id'], name=op.f('fk_fee_payments_fee_id_dossier_fees')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_fee_payments')),
        sa.UniqueConstraint('agency_code', 'receipt_number', name=op.f('uq_fee_payments_agency_code_receipt_number')),
        sa.UniqueConstraint('fee_id', name=op.f('uq_fee_payments_fee_id')),
        sa.UniqueConstraint('transaction_id', name=op.f('uq_fee_payments_transaction_id')),
    )
    op.create_index(op.f('ix_fee_payments_dossier_id'), 'fee_payments', ['dossier_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_fee_payments_dossier_id'), table_name='fee_payments')
    op.drop_table('fee_payments')
    op.drop_table('dossier_fees')
