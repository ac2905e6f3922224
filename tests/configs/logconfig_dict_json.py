# Structured logging through logconfig_dict (merged over Gunicorn's defaults with
# dictConfig, shallowly: a dict that replaces `handlers` must also give `root`): both
# gunicorn loggers go through a custom formatter to stdout.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 1
accesslog = "-"

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "custom": {"format": "CUSTOM level=%(levelname)s logger=%(name)s msg=%(message)s"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "custom", "stream": "ext://sys.stdout"},
    },
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
    },
}
