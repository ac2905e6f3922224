import json
import os

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

ITEMS = [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}]


def index(request):
    return render(request, "index.html", {"title": "Hello Django", "items": ["one", "two", "three"], "unsafe": "<b>&</b>"})


def form(request):
    # CsrfViewMiddleware rejects a POST without a valid token with 403 before this runs.
    if request.method == "POST":
        return JsonResponse({"name": request.POST.get("name"), "tags": request.POST.getlist("tag"), "ok": True})
    return render(request, "form.html")


@csrf_exempt
def items(request):
    if request.method == "POST":
        try:
            data = json.loads(request.body)
        except ValueError:
            return JsonResponse({"error": "bad json"}, status=400)
        return JsonResponse({"id": 100, "name": data.get("name"), "pid": os.getpid()}, status=201)
    return JsonResponse({"items": ITEMS, "count": len(ITEMS)})


def error(request):
    raise RuntimeError("boom from djangoproject")


def whoami(request):
    return JsonResponse(
        {
            "remote_port": request.META.get("REMOTE_PORT"),
            "pid": os.getpid(),
            "scheme": request.scheme,
            "host": request.get_host(),
        }
    )


def stream(request):
    from django.http import StreamingHttpResponse

    return StreamingHttpResponse((f"chunk {i}\n" for i in range(int(request.GET.get("n", 5)))), content_type="text/plain")
