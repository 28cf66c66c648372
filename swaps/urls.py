from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

app_name = "swaps"

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", include("swaps.api_urls")),
]
