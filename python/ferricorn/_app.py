"""Application loading and config-file execution.

Kept in Python because both are Python semantics (import machinery, ``ast``), run once at
start-up, and are not on the request path. Errors are raised as ``AppImportError`` (the
app could not be found: exit code 4) or propagate from the import itself (exit code 3).
"""

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback


class AppImportError(Exception):
    """The module imported, but the application object could not be resolved."""


def _parse_target(expr):
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppImportError(f"Failed to parse {expr!r} as an attribute name or function call.") from None
    if isinstance(node, ast.Name):
        return node.id, None, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except ValueError:
            raise AppImportError(f"Failed to parse arguments as literal values: {expr!r}") from None
        if len(kwargs) != len(node.keywords):
            raise AppImportError(f"Failed to parse arguments as literal values: {expr!r}")
        return node.func.id, args, kwargs
    raise AppImportError(f"Failed to parse {expr!r} as an attribute name or function call.")


def import_module(module):
    """Imports the module part of an app URI (errors propagate: exit code 3)."""
    if module.endswith(".py") and os.path.exists(module):
        raise ImportError(f"Failed to find application, did you mean '{module.rsplit('.', 1)[0]}:<object>'?")
    return importlib.import_module(module)


def load_app(uri):
    """Resolves ``module``, ``module:name`` or ``module:factory(literal args)``."""
    module, _, expr = uri.partition(":")
    if not module:
        raise AppImportError(f"Invalid application URI {uri!r}: missing module")
    mod = import_module(module)
    if not expr:
        for candidate in ("application", "app"):
            if hasattr(mod, candidate):
                expr = candidate
                break
        else:
            raise AppImportError(f"Failed to find attribute 'application' or 'app' in '{module}'.")
    name, args, kwargs = _parse_target(expr)
    try:
        obj = getattr(mod, name)
    except AttributeError:
        raise AppImportError(f"Failed to find attribute {name!r} in {module!r}.") from None
    if args is not None:
        try:
            obj = obj(*args, **kwargs)
        except TypeError as e:
            if _is_call_error(e):
                raise AppImportError(f"Error while loading the application:\n\n{e}") from None
            raise AppImportError(f"The function {name!r} in module {module!r} raised:\n\n{traceback.format_exc()}") from None
        except Exception:
            raise AppImportError(f"The function {name!r} in module {module!r} raised:\n\n{traceback.format_exc()}") from None
    if obj is None:
        raise AppImportError(f"Failed to find application object: {expr!r}.")
    if not callable(obj):
        raise AppImportError("Application object must be callable.")
    return obj


def _is_call_error(exc):
    tb = exc.__traceback__
    return tb is not None and tb.tb_next is None


def exec_config(path):
    """Executes a config file and returns its namespace (``python:mod`` imports a module)."""
    if path.startswith("python:"):
        return dict(vars(importlib.import_module(path[len("python:"):])))
    if path.startswith("file:"):
        path = path[len("file:"):]
    # As Gunicorn loads it: a module named __config__ in sys.modules, with an absolute
    # __file__ (hooks use it to find files next to the config after a chdir).
    name = "__config__"
    if os.path.splitext(path)[1] in (".py", ".pyc"):
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        sys.stderr.write(
            "!!!\n!!! WARNING: configuration file should have a valid Python extension.\n!!!\n\n"
        )
        sys.stderr.flush()
        loader = importlib.machinery.SourceFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return vars(mod)


def format_exception(exc, tb=None):
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def prepend_path(path):
    path = os.path.abspath(path)
    if path not in sys.path:
        sys.path.insert(0, path)


def watched_files(extra_patterns):
    """The files --reload watches: every imported module's source, plus the extra globs
    (re-expanded on every check, so new matching files are picked up)."""
    import glob

    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.isfile(path):
            files.add(path[:-1] if path.endswith(".pyc") and os.path.isfile(path[:-1]) else path)
    for pattern in extra_patterns:
        files.update(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    return sorted(files)


def syntax_error(path):
    """The SyntaxError text if a changed Python file no longer compiles, else None."""
    if not path.endswith(".py"):
        return None
    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except SyntaxError:
        return traceback.format_exc()
    except OSError:
        return None
    return None


# Positional parameters each hook must take, as Gunicorn's ``validate_callable`` checks
# them (``post_request`` may take 2, 3 or 4: the call is fitted to it).
HOOK_ARITY = {
    "on_starting": (1,), "on_reload": (1,), "when_ready": (1,), "pre_fork": (2,), "post_fork": (2,),
    "post_worker_init": (1,), "worker_int": (1,), "worker_abort": (1,), "pre_exec": (1,),
    "pre_request": (2,), "post_request": (2, 3, 4), "child_exit": (2,), "worker_exit": (2,),
    "nworkers_changed": (3,), "on_exit": (1,), "ssl_context": (2,), "on_dirty_starting": (1,),
    "dirty_post_fork": (2,), "dirty_worker_init": (1,), "dirty_worker_exit": (2,),
}


def _arity(f):
    import inspect

    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in inspect.signature(f).parameters.values() if p.kind in positional)


def resolve_hook(name, value):
    """A hook from the config file: a callable, or a ``"module.func"`` string to import;
    raises ``TypeError`` with Gunicorn's reasons when it cannot be used."""
    if isinstance(value, str):
        if "." not in value:
            raise TypeError(f"{value!r} is not an import string (module[.submodules...].object)")
        mod_name, obj_name = value.rsplit(".", 1)
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise TypeError(str(e)) from None
        try:
            value = getattr(mod, obj_name)
        except AttributeError:
            raise TypeError(f"can not load {obj_name!r} from {mod_name!r}") from None
    if not callable(value):
        raise TypeError("not callable")
    allowed = HOOK_ARITY.get(name)
    try:
        arity = _arity(value)
    except (TypeError, ValueError):
        return value  # a builtin without a signature: Gunicorn cannot check it either
    if allowed and arity not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise TypeError(f"must take {want} positional argument{'s' if allowed != (1,) else ''}, it takes {arity}")
    return value


def add_server_methods(server):
    """The methods of Gunicorn's Arbiter that hooks call, on the `server` object hooks get:
    `kill_worker(pid, sig)` and `kill_workers(sig)` signal workers (a worker already gone
    is dropped from `server.WORKERS`, as Gunicorn does), `reload()` asks the master for a
    reload (SIGHUP: it re-reads the configuration and replaces the workers)."""
    import errno
    import signal

    def kill_worker(pid, sig):
        try:
            os.kill(pid, sig)
        except OSError as e:
            if e.errno == errno.ESRCH:
                server.WORKERS.pop(pid, None)
                return
            raise

    def kill_workers(sig):
        for pid in list(server.WORKERS):
            kill_worker(pid, sig)

    def reload():
        os.kill(server.pid, signal.SIGHUP)

    server.kill_worker = kill_worker
    server.kill_workers = kill_workers
    server.reload = reload
    server.address = server.cfg.address
