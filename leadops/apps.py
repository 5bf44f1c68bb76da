from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LeadOpsConfig(AppConfig):
    name = "leadops"
    verbose_name = "LeadOps"

    def ready(self) -> None:
        from django.apps import apps

        from leadops import roles

        # Groups need the permission rows, which Django creates in post_migrate per app; the
        # routing app's signal comes after reps' and routing's permissions exist.
        post_migrate.connect(roles.ensure_groups_after_migrate, sender=apps.get_app_config("routing"))
