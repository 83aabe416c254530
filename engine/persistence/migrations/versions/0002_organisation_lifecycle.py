"""organisation, lifecycle, escalations and outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('agencies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('level', sa.String(length=30), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('successor_id', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('email', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['agencies.id'], name=op.f('fk_agencies_parent_id_agencies')),
    sa.ForeignKeyConstraint(['successor_id'], ['agencies.id'], name=op.f('fk_agencies_successor_id_agencies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agencies')),
    sa.UniqueConstraint('code', name=op.f('uq_agencies_code'))
    )
    with op.batch_alter_table('agencies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agencies_parent_id'), ['parent_id'], unique=False)

    op.create_table('officers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=200), nullable=True),
    sa.Column('phone', sa.String(length=30), nullable=True),
    sa.Column('password_hash', sa.String(length=300), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_officers')),
    sa.UniqueConstraint('username', name=op.f('uq_officers_username'))
    )
    op.create_table('officer_roles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('officer_id', sa.Integer(), nullable=False),
    sa.Column('agency_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=50), nullable=False),
    sa.ForeignKeyConstraint(['agency_id'], ['agencies.id'], name=op.f('fk_officer_roles_agency_id_agencies')),
    sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], name=op.f('fk_officer_roles_officer_id_officers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_officer_roles')),
    sa.UniqueConstraint('officer_id', 'agency_id', 'role', name=op.f('uq_officer_roles_officer_id_agency_id_role'))
    )
    with op.batch_alter_table('officer_roles', schema=None) as batch_op:
        batch_op.create_index('ix_officer_roles_agency_role', ['agency_id', 'role'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('recipient', sa.String(length=300), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('event', sa.String(length=100), nullable=False),
    sa.Column('dossier_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_outbox_dossier_id_dossiers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['state', 'next_attempt_at'], unique=False)

    op.create_table('escalations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('dossier_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.String(length=30), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('fired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_escalations_dossier_id_dossiers')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_escalations_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_escalations')),
    sa.UniqueConstraint('task_id', 'level', name=op.f('uq_escalations_task_id_level'))
    )
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.create_index('ix_escalations_pending', ['state', 'due_at'], unique=False)

    op.create_table('handovers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dossier_id', sa.Integer(), nullable=False),
    sa.Column('from_agency_id', sa.Integer(), nullable=True),
    sa.Column('to_agency_id', sa.Integer(), nullable=True),
    sa.Column('from_task_id', sa.Integer(), nullable=True),
    sa.Column('to_task_id', sa.Integer(), nullable=True),
    sa.Column('sent_by', sa.String(length=200), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_by', sa.String(length=200), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dossier_id'], ['dossiers.id'], name=op.f('fk_handovers_dossier_id_dossiers')),
    sa.ForeignKeyConstraint(['from_agency_id'], ['agencies.id'], name=op.f('fk_handovers_from_agency_id_agencies')),
    sa.ForeignKeyConstraint(['from_task_id'], ['tasks.id'], name=op.f('fk_handovers_from_task_id_tasks')),
    sa.ForeignKeyConstraint(['to_agency_id'], ['agencies.id'], name=op.f('fk_handovers_to_agency_id_agencies')),
    sa.ForeignKeyConstraint(['to_task_id'], ['tasks.id'], name=op.f('fk_handovers_to_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handovers'))
    )
    with op.batch_alter_table('handovers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handovers_dossier_id_id'), ['dossier_id', 'id'], unique=False)

    with op.batch_alter_table('dossiers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('home_agency_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('receiving_agency_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('applicant_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('applicant_phone', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('applicant_email', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('channel', sa.String(length=20), nullable=False, server_default='in_person'))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pause_reason', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('supplement_requests', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('new_appointment_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('returned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('return_channel', sa.String(length=20), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_dossiers_receiving_agency_id_agencies'), 'agencies', ['receiving_agency_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_dossiers_home_agency_id_agencies'), 'agencies', ['home_agency_id'], ['id'])

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        # A step returned for rework is run again under the same workflow task id.
        batch_op.drop_constraint('uq_tasks_dossier_id_spiff_task_id', type_='unique')
        batch_op.add_column(sa.Column('agency_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('result', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_tasks_agency_id'), ['agency_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_tasks_agency_id_agencies'), 'agencies', ['agency_id'], ['id'])



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tasks_agency_id_agencies'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_tasks_agency_id'))
        batch_op.drop_column('note')
        batch_op.drop_column('result')
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('agency_id')
        batch_op.create_unique_constraint('uq_tasks_dossier_id_spiff_task_id', ['dossier_id', 'spiff_task_id'])

    with op.batch_alter_table('dossiers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_dossiers_home_agency_id_agencies'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_dossiers_receiving_agency_id_agencies'), type_='foreignkey')
        batch_op.drop_column('return_channel')
        batch_op.drop_column('returned_at')
        batch_op.drop_column('new_appointment_at')
        batch_op.drop_column('supplement_requests')
        batch_op.drop_column('pause_reason')
        batch_op.drop_column('paused_at')
        batch_op.drop_column('channel')
        batch_op.drop_column('applicant_email')
        batch_op.drop_column('applicant_phone')
        batch_op.drop_column('applicant_name')
        batch_op.drop_column('receiving_agency_id')
        batch_op.drop_column('home_agency_id')

    with op.batch_alter_table('handovers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handovers_dossier_id_id'))

    op.drop_table('handovers')
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.drop_index('ix_escalations_pending')

    op.drop_table('escalations')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_due')

    op.drop_table('outbox')
    with op.batch_alter_table('officer_roles', schema=None) as batch_op:
        batch_op.drop_index('ix_officer_roles_agency_role')

    op.drop_table('officer_roles')
    op.drop_table('officers')
    with op.batch_alter_table('agencies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agencies_parent_id'))

    op.drop_table('agencies')
