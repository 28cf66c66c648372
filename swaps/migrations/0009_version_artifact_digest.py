"""Versions are pinned by their artifact's sha256 (swaps/engine/artifacts.py).

Existing file versions are pinned to what their file holds now, where this host can
read it (it sees the artifacts where the replicas do). A version whose file is missing
or unreadable here keeps an empty digest, which replicas do not check: the version
loads (or fails to) as it did before; register the file again as a new version to have
it pinned. Python factories have no file and no digest.
"""

from django.db import migrations, models

from swaps.engine.artifacts import digest_of


def pin_existing_versions(apps, schema_editor):
    versions = apps.get_model("swaps", "ModelVersion").objects.using(schema_editor.connection.alias)
    for pk, artifact in list(versions.exclude(runtime="python").values_list("pk", "artifact")):
        try:
            digest = digest_of(artifact)
        except (OSError, ValueError):  # missing or unreadable here: left unpinned
            continue
        versions.filter(pk=pk).update(artifact_digest=digest)


class Migration(migrations.Migration):
    dependencies = [
        ("swaps", "0008_version_batching"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="artifact_digest",
            field=models.CharField(blank=True, editable=False, max_length=71),
        ),
        migrations.RunPython(pin_existing_versions, migrations.RunPython.noop),
    ]
