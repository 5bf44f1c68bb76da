from django.urls import path

from routing.views import board, intake
from routing.views import leads as lead_views
from routing.views import rules as rule_views

urlpatterns = [
    path("board/", board.board, name="board"),
    path("board/poll/", board.board_poll, name="board_poll"),
    path("board/leads/<int:pk>/", board.lead_detail, name="board_lead"),
    path("board/leads/<int:pk>/claim/", board.claim, name="board_claim"),
    path("board/leads/<int:pk>/release/", board.release, name="board_release"),
    path("board/leads/<int:pk>/status/", board.set_status, name="board_status"),
    path("pools/", board.pools_overview, name="pools"),
    path("pools/<int:pk>/", board.pool_detail, name="pool_detail"),
    path("pools/leads/<int:pk>/take-back/", board.take_back, name="pool_take_back"),
    path("intake/", intake.intake_home, name="intake"),
    path("intake/<int:pk>/", intake.intake_job, name="intake_job"),
    path("intake/<int:pk>/mapping/", intake.intake_mapping, name="intake_mapping"),
    path("intake/<int:pk>/start/", intake.intake_start, name="intake_start"),
    path("intake/<int:pk>/rejected.csv", intake.intake_rejected, name="intake_rejected"),
    path("rules/", rule_views.rules_list, name="rules_list"),
    path("rules/new/", rule_views.rules_new_draft, name="rules_new_draft"),
    path("rules/rollback/", rule_views.rules_rollback, name="rules_rollback"),
    path("rules/diff/", rule_views.rules_diff, name="rules_diff"),
    path("rules/condition-row/", rule_views.condition_row, name="rules_condition_row"),
    path("rules/<int:pk>/", rule_views.rules_detail, name="rules_detail"),
    path("rules/<int:pk>/rename/", rule_views.rules_rename, name="rules_rename"),
    path("rules/<int:pk>/reorder/", rule_views.rules_reorder, name="rules_reorder"),
    path("rules/<int:pk>/preview/", rule_views.rules_preview, name="rules_preview"),
    path("rules/<int:pk>/publish/", rule_views.rules_publish, name="rules_publish"),
    path("rules/<int:pk>/rules/new/", rule_views.rule_edit, name="rules_rule_new"),
    path("rules/<int:pk>/rules/<int:rule_pk>/", rule_views.rule_edit, name="rules_rule_edit"),
    path("rules/<int:pk>/rules/<int:rule_pk>/delete/", rule_views.rule_delete, name="rules_rule_delete"),
    path("rules/<int:pk>/fallback/", rule_views.rule_edit, {"fallback": True}, name="rules_fallback"),
    path("policy/", rule_views.policy, name="policy"),
    path("leads/<int:pk>/explain/", lead_views.explain, name="lead_explain"),
    path("unassigned/", lead_views.unassigned, name="unassigned"),
    path("unassigned/release-held/", lead_views.unassigned_release_held, name="unassigned_release_held"),
    path("unassigned/<int:pk>/route/", lead_views.unassigned_route, name="unassigned_route"),
    path("unassigned/<int:pk>/assign/", lead_views.unassigned_assign, name="unassigned_assign"),
]
