"""Bearer-token authentication for the JSON API. Tokens are looked up by their SHA-256."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from routing.models import ApiToken


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = ApiToken.lookup(token)
        if found is None:
            return None
        request.user = found.user
        request.api_token = found
        # Cheap enough per request; keeps "last used" honest for revocation decisions.
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
        return found


token_auth = TokenAuth()
