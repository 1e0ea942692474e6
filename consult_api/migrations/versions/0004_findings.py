"""findings, triage runs, case alerts; cases.alerts worklist flags

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 20:29:57.272860
"""
from alembic import op
import sqlalchemy as sa



revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('case_alerts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.Enum('critical_finding', 'overdue', name='alertkind', native_enum=False, length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('recipients', sa.JSON(), nullable=False),
    sa.Column('delivery', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_alerts_case_id_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_alerts')),
    sa.UniqueConstraint('case_id', 'kind', name='uq_case_alerts_case_kind')
    )
    with op.batch_alter_table('case_alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_alerts_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_case_alerts_notified_at'), ['notified_at'], unique=False)

    op.create_table('triage_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('subject_kind', sa.Enum('series', 'slide', name='subjectkind', native_enum=False, length=16), nullable=False),
    sa.Column('series_id', sa.String(length=36), nullable=True),
    sa.Column('slide_id', sa.String(length=36), nullable=True),
    sa.Column('model_name', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('input_checksum', sa.String(length=64), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('state', sa.Enum('pending', 'running', 'done', 'failed', name='runstate', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_triage_runs_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['series_id'], ['dicom_series.id'], name=op.f('fk_triage_runs_series_id_dicom_series'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['slide_id'], ['slides.id'], name=op.f('fk_triage_runs_slide_id_slides'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_triage_runs')),
    sa.UniqueConstraint('case_id', 'input_checksum', 'model_name', 'model_version', name='uq_triage_runs_idempotency')
    )
    with op.batch_alter_table('triage_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_triage_runs_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_triage_runs_model_name'), ['model_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_triage_runs_series_id'), ['series_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_triage_runs_slide_id'), ['slide_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_triage_runs_state'), ['state'], unique=False)

    op.create_table('findings',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('source', sa.Enum('model', 'specialist', name='findingsource', native_enum=False, length=16), nullable=False),
    sa.Column('model_name', sa.String(length=64), nullable=True),
    sa.Column('model_version', sa.String(length=32), nullable=True),
    sa.Column('input_checksum', sa.String(length=64), nullable=True),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('slide_id', sa.String(length=36), nullable=True),
    sa.Column('location', sa.JSON(), nullable=False),
    sa.Column('heatmap_sha256', sa.String(length=64), nullable=True),
    sa.Column('state', sa.Enum('proposed', 'accepted', 'rejected', 'amended', name='findingstate', native_enum=False, length=16), nullable=False),
    sa.Column('reviewer', sa.String(length=80), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('review_comment', sa.Text(), nullable=False),
    sa.Column('amended_label', sa.String(length=64), nullable=True),
    sa.Column('amended_location', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_findings_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['triage_runs.id'], name=op.f('fk_findings_run_id_triage_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['slide_id'], ['slides.id'], name=op.f('fk_findings_slide_id_slides'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings')),
    sa.UniqueConstraint('case_id', 'input_checksum', 'model_name', 'model_version', 'label', name='uq_findings_idempotency')
    )
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_findings_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_findings_model_name'), ['model_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_findings_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_findings_state'), ['state'], unique=False)

    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alerts', sa.JSON(), nullable=False, server_default=sa.text("'[]'")))



def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('alerts')

    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_findings_state'))
        batch_op.drop_index(batch_op.f('ix_findings_run_id'))
        batch_op.drop_index(batch_op.f('ix_findings_model_name'))
        batch_op.drop_index(batch_op.f('ix_findings_case_id'))

    op.drop_table('findings')
    with op.batch_alter_table('triage_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_triage_runs_state'))
        batch_op.drop_index(batch_op.f('ix_triage_runs_slide_id'))
        batch_op.drop_index(batch_op.f('ix_triage_runs_series_id'))
        batch_op.drop_index(batch_op.f('ix_triage_runs_model_name'))
        batch_op.drop_index(batch_op.f('ix_triage_runs_case_id'))

    op.drop_table('triage_runs')
    with op.batch_alter_table('case_alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_alerts_notified_at'))
        batch_op.drop_index(batch_op.f('ix_case_alerts_case_id'))

    op.drop_table('case_alerts')
