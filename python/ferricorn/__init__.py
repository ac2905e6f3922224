"""ferricorn: a Rust HTTP server for Python WSGI and ASGI applications, compatible with Gunicorn."""

from ferricorn._ferricorn import __version__

__all__ = ["__version__", "run"]


def run(argv=None):
    """Console-script entry point: hands the command line to the Rust core."""
    import sys

    from ferricorn._ferricorn import main

    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = "ferricorn"
    sys.exit(main(args))
