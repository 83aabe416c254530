"""finished steps and returns for rework stored once for the supervisors' reports

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_COVERED = ['step_id', 'agency_id', 'category', 'started_at', 'duration', 'waiting', 'working', 'step_name']


def upgrade() -> None:
    """One row per finished step (completed or cancelled): what the reports group by, its
    judgement and its handling times in working seconds; one row per return for rework: the
    step and agency sent back from and to. Written by engine.reports.refresh_times. They
    replace the step times of 0006, which are rebuilt."""
    op.create_table(
        'report_steps',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('dossier_id', sa.Integer(), nullable=False),
        sa.Column('procedure_id', sa.Integer(), nullable=True),
        sa.Column('step_id', sa.String(length=255), nullable=False),
        sa.Column('step_name', sa.String(length=500), nullable=False),
        sa.Column('agency_id', sa.Integer(), nullable=True),
        sa.Column('officer', sa.String(length=200), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('category', sa.String(length=10), nullable=False),
        sa.Column('duration', sa.BigInteger(), nullable=True),
        sa.Column('waiting', sa.BigInteger(), nullable=True),
        sa.Column('working', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('task_id', name='pk_report_steps'),
    )
    # A period's steps of one procedure (the bottlenecks) or of all, read from the index alone on PostgreSQL.
    op.create_index('ix_report_steps_procedure', 'report_steps', ['procedure_id', 'completed_at'], postgresql_include=_COVERED)
    op.create_index('ix_report_steps_completed', 'report_steps', ['completed_at'])
    # The handling times of a procedure's steps in the order of the 90th percentile's groups.
    op.create_index('ix_report_steps_p90', 'report_steps', ['procedure_id', 'step_id', 'agency_id', 'duration'],
                    postgresql_include=['completed_at', 'started_at'], postgresql_where=sa.text('duration IS NOT NULL'),
                    sqlite_where=sa.text('duration IS NOT NULL'))
    op.create_table(
        'report_returns',
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('dossier_id', sa.Integer(), nullable=False),
        sa.Column('procedure_id', sa.Integer(), nullable=True),
        sa.Column('from_step', sa.String(length=255), nullable=True),
        sa.Column('from_agency', sa.Integer(), nullable=True),
        sa.Column('to_step', sa.String(length=255), nullable=True),
        sa.Column('to_agency', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('event_id', name='pk_report_returns'),
    )
    op.create_index('ix_report_returns_procedure', 'report_returns', ['procedure_id', 'at'])
    op.drop_table('report_task_times')
    op.execute("DELETE FROM report_times_state WHERE name = 'tasks'")


def downgrade() -> None:
    op.create_table(
        'report_task_times',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('duration', sa.BigInteger(), nullable=True),
        sa.Column('waiting', sa.BigInteger(), nullable=True),
        sa.Column('working', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('task_id', name='pk_report_task_times'),
    )
    op.execute("DELETE FROM report_times_state WHERE name IN ('steps', 'returns')")
    op.drop_index('ix_report_returns_procedure', 'report_returns')
    op.drop_table('report_returns')
    op.drop_index('ix_report_steps_p90', 'report_steps')
    op.drop_index('ix_report_steps_completed', 'report_steps')
    op.drop_index('ix_report_steps_procedure', 'report_steps')
    op.drop_table('report_steps')
