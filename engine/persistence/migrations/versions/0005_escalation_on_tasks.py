"""the next escalation rung lives on the task row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """A step carries its next rung; fired rungs stay in escalations as history."""
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('escalation_level', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('escalation_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_tasks_escalation', ['state', 'escalation_at'], unique=False)
    bind = op.get_bind()
    pending = sa.text(
        "SELECT task_id, level, due_at FROM escalations WHERE state = 'pending' ORDER BY task_id, due_at"
    )
    first: dict[int, tuple[str, object]] = {}
    for task_id, level, due_at in bind.execute(pending):
        first.setdefault(task_id, (level, due_at))
    for task_id, (level, due_at) in first.items():
        bind.execute(sa.text("UPDATE tasks SET escalation_level = :l, escalation_at = :a WHERE id = :i"),
                     {"l": level, "a": due_at, "i": task_id})
    bind.execute(sa.text("DELETE FROM escalations WHERE state <> 'fired'"))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_escalation')
        batch_op.drop_column('escalation_at')
        batch_op.drop_column('escalation_level')
