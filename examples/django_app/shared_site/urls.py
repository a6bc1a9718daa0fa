"""The example's pages."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("login/", views.login_page),
    path("logout/", views.logout_page),
    path("devices/", views.devices),
]
