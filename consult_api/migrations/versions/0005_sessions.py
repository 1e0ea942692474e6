"""review sessions and their participants (video case conferences)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('review_sessions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('provider_room', sa.String(length=64), nullable=True),
    sa.Column('status', sa.Enum('scheduled', 'live', 'ended', name='sessionstatus', native_enum=False, length=16), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('record', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_review_sessions_case_id_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_sessions'))
    )
    with op.batch_alter_table('review_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_sessions_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_sessions_status'), ['status'], unique=False)

    op.create_table('session_participants',
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.Enum('host', 'speaker', 'attendee', name='participantrole', native_enum=False, length=16), nullable=False),
    sa.Column('facility_id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('invited_by', sa.String(length=80), nullable=False),
    sa.Column('invited_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('left_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recording_consent', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['facility_id'], ['facilities.id'], name=op.f('fk_session_participants_facility_id_facilities')),
    sa.ForeignKeyConstraint(['session_id'], ['review_sessions.id'], name=op.f('fk_session_participants_session_id_review_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_session_participants_user_id_users')),
    sa.PrimaryKeyConstraint('session_id', 'user_id', name=op.f('pk_session_participants'))
    )
    with op.batch_alter_table('session_participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_session_participants_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('session_participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_session_participants_user_id'))

    op.drop_table('session_participants')
    with op.batch_alter_table('review_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_sessions_status'))
        batch_op.drop_index(batch_op.f('ix_review_sessions_case_id'))

    op.drop_table('review_sessions')
