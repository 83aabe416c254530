"""indexes and stored handling times behind the supervisors' reports

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Audit events by action and time (pauses and returns for rework in a period), steps by
    completion time, dossiers by finishing time; and the handling times in working seconds of
    completed steps and finished dossiers, computed once from the working calendar
    (engine.reports.refresh_times), with the calendar they were computed with."""
    op.create_index('ix_audit_events_action_at', 'audit_events', ['action', 'at'])
    op.create_index('ix_tasks_completed_at', 'tasks', ['completed_at'])
    op.create_index('ix_dossiers_finished_at', 'dossiers', ['finished_at'])
    op.create_table(
        'report_task_times',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('duration', sa.BigInteger(), nullable=True),
        sa.Column('waiting', sa.BigInteger(), nullable=True),
        sa.Column('working', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('task_id', name='pk_report_task_times'),
    )
    op.create_table(
        'report_dossier_times',
        sa.Column('dossier_id', sa.Integer(), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('duration', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('dossier_id', name='pk_report_dossier_times'),
    )
    op.create_table(
        'report_times_state',
        sa.Column('name', sa.String(length=30), nullable=False),
        sa.Column('calendar_key', sa.String(length=64), nullable=True),
        sa.Column('watermark', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('name', name='pk_report_times_state'),
    )


def downgrade() -> None:
    op.drop_table('report_times_state')
    op.drop_table('report_dossier_times')
    op.drop_table('report_task_times')
    op.drop_index('ix_dossiers_finished_at', 'dossiers')
    op.drop_index('ix_tasks_completed_at', 'tasks')
    op.drop_index('ix_audit_events_action_at', 'audit_events')
