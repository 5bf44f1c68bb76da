from django.urls import path

from routing.views import board, intake

urlpatterns = [
    path("board/", board.board, name="board"),
    path("intake/", intake.intake_home, name="intake"),
]
