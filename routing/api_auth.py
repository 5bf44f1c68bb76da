"""Bearer-token authentication for the JSON API. Tokens are looked up by their SHA-256."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from leadops import roles
from routing.models import ApiToken

# "Last used" is kept to the minute: enough to decide which tokens to revoke, and a busy form or
# CRM integration then writes the token's row once a minute instead of on every request.
LAST_USED_PRECISION = dt.timedelta(minutes=1)


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = ApiToken.lookup(token)
        if found is None:
            return None
        roles.remember_groups(found.user, found.group_names)
        request.user = found.user
        request.api_token = found
        now = timezone.now()
        if found.last_used_at is None or now - found.last_used_at >= LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
        return found


token_auth = TokenAuth()
