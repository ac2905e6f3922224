# The app named in the config file (gunicorn >= 20.1), so the start command is just
# `gunicorn -c wsgi_app_conf.py`.
import os

wsgi_app = "conf_app:app"
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 2
