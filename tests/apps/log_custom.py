"""An app that changes Gunicorn's loggers at import, as real apps and config files do
(`LOG_CUSTOM` picks how); every path is testapp's."""

import logging
import os

from testapp import app  # noqa: F401

mode = os.environ.get("LOG_CUSTOM", "")


class HealthFilter(logging.Filter):
    """The common recipe: drop health checks from the access log by the `U` atom."""

    def filter(self, record):
        return record.args["U"] != "/health"


class PingFilter(logging.Filter):
    def filter(self, record):
        return "/ping" not in record.getMessage()


if mode == "filter":
    logging.getLogger("gunicorn.access").addFilter(HealthFilter())
    logging.getLogger("gunicorn.access").addFilter(PingFilter())
elif mode == "silence":
    logging.getLogger("gunicorn.access").disabled = True
    logging.getLogger("gunicorn.error").setLevel(logging.ERROR)
elif mode == "formatter":
    for h in logging.getLogger("gunicorn.error").handlers:
        h.setFormatter(logging.Formatter("CUSTOMFMT %(levelname)s %(message)s"))
elif mode == "handler":
    extra = logging.FileHandler(os.environ["LOG_CUSTOM_FILE"])
    extra.setFormatter(logging.Formatter("EXTRA %(name)s %(levelname)s %(message)s"))
    logging.getLogger("gunicorn.access").addHandler(extra)
    logging.getLogger("gunicorn.error").addHandler(extra)
