from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "query": request.GET.get("q"),
            "body": request.body.decode(),
            "scheme": request.scheme,
        }
    )


urlpatterns = [path("hello/", hello)]
