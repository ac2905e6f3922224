"""Gunicorn's Python loggers, ``gunicorn.error`` and ``gunicorn.access``.

Without a logging configuration they exist for application code and write through
ferricorn's own (Rust) error and access logs, in Gunicorn's format. With
``logconfig_dict``, ``--log-config-json`` or ``--log-config`` they are configured exactly
as Gunicorn configures them (its defaults merged with a top-level ``dict.update``), and
ferricorn then sends its own log lines through them, so handlers and formatters (JSON,
files, anything) apply to every line. The same happens for a logger that the config
file or the application changed (a filter, a handler, a level, a formatter: see
``customised``), so a health-check filter on ``gunicorn.access`` works as in Gunicorn.
Access records carry Gunicorn's shape: ``msg`` is the access format and ``args`` the
atoms (``record.args["U"]``).
"""

import copy
import json
import logging
import logging.config
import os

from ferricorn._ferricorn import _write_access, _write_log, _write_log_line

LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG}

CONFIG_DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True,
                            "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}


class _ErrorLog(logging.Handler):
    """Records of ``gunicorn.error`` into ferricorn's error log."""

    _ferricorn = True

    def emit(self, record):
        try:
            if self.formatter is not None:
                # A formatter someone set on this handler writes the whole line.
                _write_log_line(self.format(record))
                return
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            _write_log(record.levelno, msg)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


class _AccessLog(logging.Handler):
    """Records of ``gunicorn.access`` into ferricorn's access log."""

    _ferricorn = True

    def emit(self, record):
        try:
            _write_access(self.format(record) if self.formatter is not None else record.getMessage())
        except Exception:  # noqa: BLE001
            self.handleError(record)


class SafeAtoms(dict):
    """Gunicorn's ``glogging.SafeAtoms``: ``"`` escaped in text, ``-`` for a missing atom,
    ``{...}`` keys looked up in lower case."""

    def __init__(self, atoms):
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = value.replace('"', '\\"') if isinstance(value, str) else value

    def __getitem__(self, k):
        kl = k.lower() if k.startswith("{") else k
        if kl in self:
            return super().__getitem__(kl)
        return "-"


def access(logger, fmt, atoms):
    """One request into ``gunicorn.access``, as Gunicorn's ``Logger.access`` logs it."""
    logger.info(fmt, SafeAtoms(atoms))


_levels = {}


def customised():
    """Whether the config file or the app changed ``gunicorn.error`` / ``gunicorn.access``
    since ``setup`` (filters, handlers, level, formatters, disabled, propagate): those
    changes must then see ferricorn's own lines too. Returns two booleans."""
    out = []
    for name in ("gunicorn.error", "gunicorn.access"):
        log = logging.getLogger(name)
        mine = [h for h in log.handlers if getattr(h, "_ferricorn", False)]
        others = len(log.handlers) - len(mine)
        out.append(bool(
            log.filters or others or not mine or log.disabled or log.propagate
            or log.level != _levels.get(name)
            or any(h.filters or h.formatter is not None or h.level != logging.NOTSET for h in mine)
        ))
    return tuple(out)


def set_level(loglevel):
    """HUP with a new ``loglevel``: the error logger's level, as Gunicorn's reload sets it."""
    level = LEVELS.get((loglevel or "info").lower(), logging.INFO)
    logging.getLogger("gunicorn.error").setLevel(level)
    _levels["gunicorn.error"] = level


def setup(loglevel, logconfig_dict=None, logconfig_json=None, logconfig=None):
    """Returns the two loggers when a configuration routes them (ferricorn must then log
    through them), else ``None``. Raises ``RuntimeError`` with Gunicorn's reasons."""
    error_log = logging.getLogger("gunicorn.error")
    access_log = logging.getLogger("gunicorn.access")
    error_log.propagate = False
    access_log.propagate = False
    error_log.setLevel(LEVELS.get((loglevel or "info").lower(), logging.INFO))
    access_log.setLevel(logging.INFO)
    _levels.update({"gunicorn.error": error_log.level, "gunicorn.access": logging.INFO})
    for log, handler in ((error_log, _ErrorLog()), (access_log, _AccessLog())):
        for h in list(log.handlers):
            if getattr(h, "_ferricorn", False):
                log.removeHandler(h)
        log.addHandler(handler)

    config = copy.deepcopy(CONFIG_DEFAULTS)
    if logconfig_dict:
        config.update(logconfig_dict)
        _dict_config(config)
    elif logconfig_json:
        if not os.path.exists(logconfig_json):
            raise RuntimeError(f"log config {logconfig_json!r} not found")
        try:
            with open(logconfig_json) as f:
                config.update(json.load(f))
        except (OSError, ValueError) as exc:
            raise RuntimeError(str(exc)) from exc
        _dict_config(config)
    elif logconfig:
        if not os.path.exists(logconfig):
            raise RuntimeError(f"log config {logconfig!r} not found")
        defaults = {"__file__": logconfig, "here": os.path.dirname(logconfig)}
        try:
            logging.config.fileConfig(logconfig, defaults=defaults, disable_existing_loggers=False)
        except Exception as exc:  # noqa: BLE001 - configparser and logging raise many kinds
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
    else:
        return None
    return error_log, access_log


def _dict_config(config):
    try:
        logging.config.dictConfig(config)
    except (AttributeError, ImportError, ValueError, TypeError) as exc:
        raise RuntimeError(str(exc)) from exc
