# gunicorn.conf.py for a Django app on Heroku (the shape of the Heroku Python guides and
# the many "deploy Django to Heroku" posts): bind and worker count come from the dyno's
# environment, the app is preloaded, workers are recycled, access log on stdout.
import os

bind = "0.0.0.0:" + os.environ.get("PORT", "8000")
workers = int(os.environ.get("WEB_CONCURRENCY", 3))
preload_app = True
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 1200))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", 50))
timeout = 30
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
