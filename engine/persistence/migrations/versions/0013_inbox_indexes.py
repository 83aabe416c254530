"""indexes in the inbox's own order, so its first page is one index range scan

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """The role's queue and one's own steps, sorted as the inbox sorts them (undated last, then due, then id)."""
    op.create_index("ix_tasks_offered", "tasks", ["agency_id", "role", "state", sa.text("(due_at IS NULL)"), "due_at", "id"])
    op.create_index("ix_tasks_mine", "tasks", ["assignee", "state", sa.text("(due_at IS NULL)"), "due_at", "id"])
    op.drop_index("ix_tasks_assignee", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_assignee", "tasks", ["assignee", "state", "due_at"])
    op.drop_index("ix_tasks_mine", table_name="tasks")
    op.drop_index("ix_tasks_offered", table_name="tasks")
