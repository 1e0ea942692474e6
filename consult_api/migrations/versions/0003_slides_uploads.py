"""slides (whole-slide images); tus uploads live on disk, not in the database

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 20:25:50.004353
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slides",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column(
            "status", sa.Enum("ready", name="slidestatus", native_enum=False, length=16), nullable=False
        ),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("entry", sa.String(length=1024), nullable=False),
        sa.Column("vendor", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("level_count", sa.Integer(), nullable=False),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("mpp_x", sa.Float(), nullable=True),
        sa.Column("mpp_y", sa.Float(), nullable=True),
        sa.Column("objective_power", sa.Float(), nullable=True),
        sa.Column("associated_images", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_slides_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slides")),
    )
    with op.batch_alter_table("slides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slides_blob_sha256"), ["blob_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_slides_case_id"), ["case_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("slides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slides_case_id"))
        batch_op.drop_index(batch_op.f("ix_slides_blob_sha256"))

    op.drop_table("slides")
