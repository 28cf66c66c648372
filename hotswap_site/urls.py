from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    # django-rq adds its queue dashboard inside the admin (/admin/django_rq/...).
    path("admin/", admin.site.urls),
    # Only log in and out: password resets need outgoing mail, which Hotswap does not set up.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("swaps.urls")),
]
