"""The audit log becomes a hash chain, and the database refuses to rewrite it.

Existing entries are chained in id order (the order they were written). Then a trigger
refuses UPDATE of an entry, on PostgreSQL DELETE too. On SQLite DELETE stays possible:
Django empties SQLite tables with DELETE (the test suite's flush between transactional
tests), and SQLite has no TRUNCATE to do it with instead; a deleted entry breaks the
chain, which `manage.py verify_audit` reports. On PostgreSQL the flush is TRUNCATE,
which row triggers do not see.

A later migration that makes SQLite rebuild this table (most AlterField and AddField
operations do: create, copy, drop, rename) drops the trigger with the old table, and
must create it again.
"""

from django.db import migrations, models
from django.utils import timezone

from swaps import audit_chain

TABLE = "swaps_auditentry"
TRIGGER = "swaps_auditentry_append_only"
REFUSAL = "the audit log is append-only: entries are never changed or deleted"

POSTGRESQL_FUNCTION = f"""
CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'restrict_violation';
END;
$$
"""
POSTGRESQL_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE ON {TABLE}
FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()
"""
SQLITE_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON {TABLE}
BEGIN
    SELECT RAISE(ABORT, '{REFUSAL}');
END
"""

CHAINED_PER_QUERY = 500


def chain_existing_entries(apps, schema_editor):
    AuditEntry = apps.get_model("swaps", "AuditEntry")
    entries = AuditEntry.objects.using(schema_editor.connection.alias).order_by("id")
    previous_hash, batch = audit_chain.GENESIS, []
    for sequence, entry in enumerate(entries.iterator(chunk_size=CHAINED_PER_QUERY), start=1):
        entry.sequence, entry.previous_hash = sequence, previous_hash
        entry.entry_hash = previous_hash = audit_chain.digest(entry)
        batch.append(entry)
        if len(batch) == CHAINED_PER_QUERY:
            AuditEntry.objects.bulk_update(batch, ["sequence", "previous_hash", "entry_hash"])
            batch = []
    AuditEntry.objects.bulk_update(batch, ["sequence", "previous_hash", "entry_hash"])


def create_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_FUNCTION)
        schema_editor.execute(POSTGRESQL_TRIGGER)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER)


def drop_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    elif vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")


class Migration(migrations.Migration):
    dependencies = [
        ("swaps", "0005_code_and_approval_permissions"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditentry",
            name="at",
            field=models.DateTimeField(db_index=True, default=timezone.now, editable=False),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="sequence",
            field=models.PositiveBigIntegerField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="previous_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditentry",
            name="entry_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(chain_existing_entries, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditentry",
            name="sequence",
            field=models.PositiveBigIntegerField(editable=False, unique=True),
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
