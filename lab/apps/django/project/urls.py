"""One view: `/` answers `django ok`."""
from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse("django ok\n", content_type="text/plain")


urlpatterns = [path("", index)]
