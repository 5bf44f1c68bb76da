"""The JSON API root (django-ninja). Routers live next to the code they expose."""

from ninja import NinjaAPI

api = NinjaAPI(
    title="LeadOps API",
    version="1.0",
    description=(
        "Create leads, follow their routing, claim from pools. "
        "Authenticate with `Authorization: Bearer <token>`."
    ),
    urls_namespace="api",
)
api.add_router("/leads/", "routing.api.router")  # leads in: create, read, list, status (CONTRACT §4)
api.add_router("/", "routing.api_pools.router")  # pools & claims (CONTRACT §5)
