import asyncio
import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt


async def async_view(request, n=0):
    await asyncio.sleep(0.01)
    return JsonResponse(
        {
            "async": True,
            "n": n,
            "path": request.path,
            "path_info": request.path_info,
            "method": request.method,
            "q": request.GET.get("q"),
            "script_name": request.META.get("SCRIPT_NAME"),
        }
    )


@csrf_exempt
async def echo(request):
    data = json.loads(request.body or b"{}")
    return JsonResponse({"received": data, "content_type": request.content_type})
