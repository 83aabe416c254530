"""result documents of steps, with the verdict on their digital signature

Revision ID: 0010
Revises: 0011
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'result_documents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dossier_id', sa.Integer(), nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('step_id', sa.String(length=255), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('uploaded_by', sa.String(length=200), nullable=False),
        sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('signature_valid', sa.Boolean(), nullable=False),
        sa.Column('signer', sa.String(length=500), nullable=True),
        sa.Column('signed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('reasons', sa.JSON(), nullable=False),
        sa.Column('verified_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_result_documents_dossier_id_dossiers')),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_result_documents_task_id_tasks')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_result_documents')),
    )
    op.create_index('ix_result_documents_dossier', 'result_documents', ['dossier_id', 'id'], unique=False)
    op.create_index('ix_result_documents_task', 'result_documents', ['task_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_result_documents_task', table_name='result_documents')
    op.drop_index('ix_result_documents_dossier', table_name='result_documents')
    op.drop_table('result_documents')
