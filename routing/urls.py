from django.urls import path

from routing.views import board, intake

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
]
