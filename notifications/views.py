"""The operators' dashboard: one server-rendered page, plain JavaScript, no build step."""

from django.shortcuts import render

from stations.models import Station


def dashboard(request):
    stations = list(Station.objects.order_by("code").values_list("code", "name"))
    return render(request, "notifications/dashboard.html", {"stations": stations})
