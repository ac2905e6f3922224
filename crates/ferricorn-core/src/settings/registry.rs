//! Every Gunicorn 27 setting, plus ferricorn's own additions (marked "ferricorn:").

use super::{Def, Kind};

const POS: Kind = Kind::Int { min: 0 };
const ONE: Kind = Kind::Int { min: 1 };

macro_rules! defs {
    ($( $name:literal, [$($flag:literal),*], $meta:literal, $kind:expr, $default:literal, $section:literal, $doc:literal; )*) => {
        &[ $( Def { name: $name, flags: &[$($flag),*], metavar: $meta, kind: $kind, default: $default, section: $section, doc: $doc }, )* ]
    };
}

pub static REGISTRY: &[Def] = defs![
    "config", ["-c", "--config"], "CONFIG", Kind::Str, "./gunicorn.conf.py", "Config File",
        "The Python config file to execute (`PATH`, `file:PATH` or `python:MODULE`). Without it, `./gunicorn.conf.py` is used when it exists.";
    "wsgi_app", [], "", Kind::Str, "", "Config File",
        "The application (`module:callable`) when none is given on the command line.";
    "bind", ["-b", "--bind"], "ADDRESS", Kind::List, "127.0.0.1:8000", "Server Socket",
        "An address to listen on: `HOST`, `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH` or `fd://FD`; repeatable. Defaults to `0.0.0.0:$PORT` when `PORT` is set.";
    "backlog", ["--backlog"], "INT", POS, "2048", "Server Socket",
        "The maximum number of pending connections (the `listen()` backlog).";
    "workers", ["-w", "--workers"], "INT", POS, "1", "Worker Processes",
        "The number of worker processes. Defaults to `$WEB_CONCURRENCY` when set. 0 starts the master alone, as in Gunicorn (`TTIN` adds workers).";
    "worker_class", ["-k", "--worker-class"], "STRING", Kind::Str, "sync", "Worker Processes",
        "The worker type. `sync` and `gthread` run WSGI apps on a pool of `threads` threads behind the Rust HTTP front end; `asgi` (and uvicorn's worker paths) select the ASGI bridge.";
    "interface", ["--interface"], "STRING", Kind::Choice(&["auto", "wsgi", "asgi"]), "auto", "Worker Processes",
        "ferricorn: the application interface. `auto` detects ASGI 3 callables (coroutine functions, or objects whose `__call__` is one); `-k asgi` and uvicorn's worker classes select ASGI too.";
    "threads", ["--threads"], "INT", POS, "1", "Worker Processes",
        "The number of application calls a worker runs at once (one OS thread each; 0 counts as 1, as in Gunicorn). Slow clients never hold one: all socket I/O is done in Rust.";
    "worker_connections", ["--worker-connections"], "INT", POS, "1000", "Worker Processes",
        "The maximum number of simultaneous client connections per worker (0 = no limit: Gunicorn's sync worker ignores the setting).";
    "max_requests", ["--max-requests"], "INT", POS, "0", "Worker Processes",
        "Restart a worker after this many requests (0 = never).";
    "max_requests_jitter", ["--max-requests-jitter"], "INT", POS, "0", "Worker Processes",
        "A random amount, up to this, added to `max_requests` per worker.";
    "max_worker_memory", ["--max-worker-memory"], "MIB", POS, "0", "Worker Processes",
        "ferricorn: a worker whose resident memory exceeds this many MiB is retired gracefully and replaced (0 = never).";
    "forwarded_header", ["--forwarded-header"], "", Kind::Flag, "", "Server Mechanics",
        "ferricorn: honour the RFC 7239 `Forwarded` header from peers in `--forwarded-allow-ips`: its last element's `proto=` sets the scheme and `for=` the client address (`REMOTE_ADDR`, ASGI `client`). Earlier elements are ignored: only the nearest proxy is trusted.";
    "max_queued", ["--max-queued"], "INT", POS, "0", "Worker Processes",
        "ferricorn: shed load instead of queueing it. A worker already running `threads` requests holds at most this many more; the next ones get `503 Service Unavailable` with `Retry-After: 1` at once. Connections beyond `--worker-connections` are then answered the same way instead of waiting in the listen backlog. 0 = unlimited, as in Gunicorn.";
    "request_deadline", ["--request-deadline"], "SECONDS", POS, "0", "Worker Processes",
        "ferricorn: a request whose response has not started this many seconds after it arrived (time queued included) is answered `504 Gateway Timeout`; the application call itself goes on and `--timeout` still recycles a worker stuck in it. 0 = no deadline.";
    "timeout", ["-t", "--timeout"], "INT", POS, "30", "Worker Processes",
        "Seconds an application call may run before its worker is aborted and replaced (0 = never).";
    "graceful_timeout", ["--graceful-timeout"], "INT", POS, "30", "Worker Processes",
        "Seconds workers get to finish in-flight requests after a graceful stop.";
    "keepalive", ["--keep-alive"], "INT", POS, "2", "Worker Processes",
        "Seconds to wait for the next request on a keep-alive connection (0 disables keep-alive).";
    "limit_request_line", ["--limit-request-line"], "INT", POS, "4094", "Security",
        "The maximum size of the request line in bytes (0 = unlimited; values above 8190 are capped at 8190). Longer lines get 414.";
    "limit_request_fields", ["--limit-request-fields"], "INT", POS, "100", "Security",
        "The maximum number of header fields (capped at 32768). More get 431.";
    "limit_request_field_size", ["--limit-request-field_size"], "INT", POS, "8190", "Security",
        "The maximum size of one header line in bytes (0 means 8190, as in Gunicorn). Larger get 431.";
    "limit_request_body", ["--limit-request-body"], "INT", POS, "0", "Security",
        "ferricorn: the maximum request body in bytes (0 = unlimited). Larger bodies get 413.";
    "static_map", ["--static-map"], "PREFIX=DIR", Kind::List, "", "Static Files",
        "ferricorn: serve the files under `DIR` at the URL prefix `PREFIX` from Rust, before the application is called (e.g. `/static=./staticfiles`); repeatable, the longest matching prefix wins.";
    "static_max_age", ["--static-max-age"], "[PREFIX=]SECONDS", Kind::List, "60", "Static Files",
        "ferricorn: `Cache-Control: public, max-age=SECONDS` for static files; `PREFIX=SECONDS` sets it for one prefix. Repeatable.";
    "static_immutable", ["--static-immutable"], "", Kind::Flag, "", "Static Files",
        "ferricorn: files whose name carries a content hash (`app.3f2a9b1c4d5e.css`, as Django's `ManifestStaticFilesStorage` writes them: 12 or more hex digits between dots) are cached for a year with `immutable`.";
    "static_fallthrough", ["--static-fallthrough"], "", Kind::Flag, "", "Static Files",
        "ferricorn: a file missing under a static prefix is passed to the application instead of answered with 404.";
    "static_follow_symlinks", ["--static-follow-symlinks"], "", Kind::Flag, "", "Static Files",
        "ferricorn: serve symbolic links that lead outside the static directory (links that stay inside are always followed).";
    "static_dotfiles", ["--static-dotfiles"], "", Kind::Flag, "", "Static Files",
        "ferricorn: serve files and directories whose name starts with `.` (refused with 404 by default).";
    "static_index", ["--static-index"], "FILE", Kind::Str, "", "Static Files",
        "ferricorn: the file served for a directory (e.g. `index.html`); directories are never listed.";
    "reload", ["--reload"], "", Kind::Flag, "", "Debugging",
        "Restart workers when application code changes.";
    "reload_engine", ["--reload-engine"], "STRING", Kind::Choice(&["auto", "poll", "inotify"]), "auto", "Debugging",
        "The reloader implementation: `auto`, `poll` or `inotify`.";
    "reload_extra_files", ["--reload-extra-file"], "FILES", Kind::List, "", "Debugging",
        "Extra files or globs to watch with `--reload`; repeatable.";
    "spew", ["--spew"], "", Kind::Flag, "", "Debugging",
        "Trace every executed line (very slow).";
    "check_config", ["--check-config"], "", Kind::Flag, "", "Debugging",
        "Load the configuration and the application, then exit 0 (or 1 on error).";
    "print_config", ["--print-config"], "", Kind::Flag, "", "Debugging",
        "Print the resolved settings, then behave like `--check-config`.";
    "preload_app", ["--preload"], "", Kind::Flag, "", "Server Mechanics",
        "Load the application in the master before forking workers.";
    "sendfile", ["--no-sendfile"], "", Kind::NegFlag, "", "Server Mechanics",
        "Disable sendfile() for `wsgi.file_wrapper` responses (also via `SENDFILE=0`).";
    "reuse_port", ["--reuse-port"], "", Kind::Flag, "", "Server Mechanics",
        "Set `SO_REUSEPORT` on listening sockets.";
    "chdir", ["--chdir"], "DIR", Kind::Str, "", "Server Mechanics",
        "Change to this directory (and put it first on `sys.path`) before loading the application.";
    "daemon", ["-D", "--daemon"], "", Kind::Flag, "", "Server Mechanics",
        "Detach from the terminal.";
    "raw_env", ["-e", "--env"], "ENV", Kind::List, "", "Server Mechanics",
        "Set an environment variable (`KEY=VALUE`) in the master and workers; repeatable.";
    "pidfile", ["-p", "--pid"], "FILE", Kind::Str, "", "Server Mechanics",
        "Write the master's PID to this file.";
    "worker_tmp_dir", ["--worker-tmp-dir"], "DIR", Kind::Str, "", "Server Mechanics",
        "Accepted for compatibility; ferricorn's heartbeats use shared memory.";
    "user", ["-u", "--user"], "USER", Kind::Str, "", "Server Mechanics",
        "Switch worker processes to this user (name or uid).";
    "group", ["-g", "--group"], "GROUP", Kind::Str, "", "Server Mechanics",
        "Switch worker processes to this group (name or gid).";
    "umask", ["-m", "--umask"], "INT", Kind::AutoInt, "0", "Server Mechanics",
        "The umask for files ferricorn creates, such as UNIX sockets (`0o22`, `022`, `0x12`).";
    "initgroups", ["--initgroups"], "", Kind::Flag, "", "Server Mechanics",
        "Give workers all the supplementary groups of `user`.";
    "tmp_upload_dir", [], "", Kind::Str, "", "Server Mechanics",
        "Accepted for compatibility; request bodies are streamed.";
    "secure_scheme_headers", [], "", Kind::Python, "", "Server Mechanics",
        "Headers (and values) that mark a request from a trusted proxy as HTTPS.";
    "forwarded_allow_ips", ["--forwarded-allow-ips"], "STRING", Kind::Str, "127.0.0.1,::1", "Server Mechanics",
        "Comma-separated IPs or CIDRs (or `*`) trusted to set forwarding headers.";
    "accesslog", ["--access-logfile"], "FILE", Kind::Str, "", "Logging",
        "The access log file (`-` = stdout). Off unless set.";
    "disable_redirect_access_to_syslog", ["--disable-redirect-access-to-syslog"], "", Kind::Flag, "", "Logging",
        "Do not send access log lines to syslog.";
    "access_log_format", ["--access-logformat"], "STRING", Kind::Str, "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"", "Logging",
        "The access log format, with Gunicorn's atoms.";
    "access_log_json", ["--access-log-json"], "", Kind::Flag, "", "Logging",
        "ferricorn: write each access-log line as a JSON object (`time`, `remote_addr`, `user`, `request`, `method`, `path`, `query`, `protocol`, `status`, `bytes`, `referer`, `user_agent`, `duration_us`, `pid`: the values of Gunicorn's atoms) instead of `--access-logformat`.";
    "errorlog", ["--error-logfile", "--log-file"], "FILE", Kind::Str, "-", "Logging",
        "The error log file (`-` = stderr).";
    "loglevel", ["--log-level"], "LEVEL", Kind::Str, "info", "Logging",
        "The error log level: debug, info, warning, error or critical (any case). As in Gunicorn, any other value (`warn` included) means info.";
    "capture_output", ["--capture-output"], "", Kind::Flag, "", "Logging",
        "Redirect stdout and stderr to the error log file.";
    "logger_class", ["--logger-class"], "STRING", Kind::Str, "gunicorn.glogging.Logger", "Logging",
        "The logger class (accepted for compatibility).";
    "logconfig", ["--log-config"], "FILE", Kind::Str, "", "Logging",
        "A `logging.config.fileConfig` file.";
    "logconfig_dict", [], "", Kind::Python, "", "Logging",
        "A `logging.config.dictConfig` dictionary.";
    "logconfig_json", ["--log-config-json"], "FILE", Kind::Str, "", "Logging",
        "A JSON file in `dictConfig` format.";
    "syslog_addr", ["--log-syslog-to"], "SYSLOG_ADDR", Kind::Str, "udp://localhost:514", "Logging",
        "Where to send syslog messages.";
    "syslog", ["--log-syslog"], "", Kind::Flag, "", "Logging",
        "Send logs to syslog.";
    "syslog_prefix", ["--log-syslog-prefix"], "SYSLOG_PREFIX", Kind::Str, "", "Logging",
        "The program name in syslog lines.";
    "syslog_facility", ["--log-syslog-facility"], "SYSLOG_FACILITY", Kind::Str, "user", "Logging",
        "The syslog facility.";
    "enable_stdio_inheritance", ["-R", "--enable-stdio-inheritance"], "", Kind::Flag, "", "Logging",
        "Keep stdio open when daemonized.";
    "statsd_host", ["--statsd-host"], "STATSD_ADDR", Kind::Str, "", "Logging",
        "The StatsD server (`HOST:PORT`, `HOST` for port 8125, `[IPv6]:PORT` or `unix://PATH`); turns on Gunicorn's StatsD metrics.";
    "dogstatsd_tags", ["--dogstatsd-tags"], "DOGSTATSD_TAGS", Kind::Str, "", "Logging",
        "Comma-separated DogStatsD tags.";
    "statsd_prefix", ["--statsd-prefix"], "STATSD_PREFIX", Kind::Str, "", "Logging",
        "A prefix for StatsD metric names.";
    "enable_backlog_metric", ["--enable-backlog-metric"], "", Kind::Flag, "", "Logging",
        "Send the number of connections waiting in the listen queues to StatsD (`gunicorn.backlog`, a histogram) every second.";
    "metrics_bind", ["--metrics-bind"], "ADDRESS", Kind::Str, "", "Logging",
        "ferricorn: serve Prometheus metrics, summed over all workers by the master, at `http://ADDRESS/metrics` (e.g. `127.0.0.1:9100`).";
    "proc_name", ["-n", "--name"], "STRING", Kind::Str, "", "Process Naming",
        "The base of the process titles.";
    "default_proc_name", [], "", Kind::Str, "gunicorn", "Process Naming",
        "The process title base when `proc_name` is not set.";
    "pythonpath", ["--pythonpath"], "STRING", Kind::Str, "", "Server Mechanics",
        "Comma-separated directories to put first on `sys.path`.";
    "paste", ["--paste", "--paster"], "STRING", Kind::Str, "", "Server Mechanics",
        "Load a PasteDeploy config file.";
    "on_starting", [], "", Kind::Python, "", "Server Hooks", "Called in the master before it initialises.";
    "on_reload", [], "", Kind::Python, "", "Server Hooks", "Called in the master on SIGHUP.";
    "when_ready", [], "", Kind::Python, "", "Server Hooks", "Called when the server is ready.";
    "pre_fork", [], "", Kind::Python, "", "Server Hooks", "Called in the master before a worker is forked.";
    "post_fork", [], "", Kind::Python, "", "Server Hooks", "Called in a worker just after it is forked.";
    "post_worker_init", [], "", Kind::Python, "", "Server Hooks", "Called in a worker after the application is loaded.";
    "worker_int", [], "", Kind::Python, "", "Server Hooks", "Called in a worker on SIGINT or SIGQUIT.";
    "worker_abort", [], "", Kind::Python, "", "Server Hooks", "Called in a worker on SIGABRT (timeout).";
    "pre_exec", [], "", Kind::Python, "", "Server Hooks", "Called before a new master is executed.";
    "pre_request", [], "", Kind::Python, "", "Server Hooks", "Called in a worker before each request.";
    "post_request", [], "", Kind::Python, "", "Server Hooks", "Called in a worker after each request.";
    "child_exit", [], "", Kind::Python, "", "Server Hooks", "Called in the master after a worker exits.";
    "worker_exit", [], "", Kind::Python, "", "Server Hooks", "Called in a worker as it exits.";
    "nworkers_changed", [], "", Kind::Python, "", "Server Hooks", "Called when the number of workers changes.";
    "on_exit", [], "", Kind::Python, "", "Server Hooks", "Called just before the master exits.";
    "ssl_context", [], "", Kind::Python, "", "Server Hooks", "Returns the TLS context.";
    "proxy_protocol", ["--proxy-protocol"], "MODE", Kind::Choice(&["off", "v1", "v2", "auto"]), "off", "Server Mechanics",
        "Accept a PROXY protocol header: off, v1, v2 or auto (the bare flag means auto).";
    "proxy_allow_ips", ["--proxy-allow-from"], "STRING", Kind::Str, "127.0.0.1,::1", "Server Mechanics",
        "IPs or CIDRs allowed to send PROXY headers.";
    "protocol", ["--protocol"], "STRING", Kind::Choice(&["http", "uwsgi"]), "http", "Server Mechanics",
        "The wire protocol of the listeners.";
    "uwsgi_allow_ips", ["--uwsgi-allow-from"], "STRING", Kind::Str, "127.0.0.1,::1", "Server Mechanics",
        "IPs allowed to speak the uWSGI protocol.";
    "keyfile", ["--keyfile"], "FILE", Kind::Str, "", "SSL", "The TLS private key file.";
    "certfile", ["--certfile"], "FILE", Kind::Str, "", "SSL", "The TLS certificate file.";
    "ssl_version", ["--ssl-version"], "VALUE", Kind::Str, "2", "SSL", "Ignored, as in Gunicorn.";
    "cert_reqs", ["--cert-reqs"], "VALUE", POS, "0", "SSL", "Client certificates: 0 none, 1 optional, 2 required.";
    "ca_certs", ["--ca-certs"], "FILE", Kind::Str, "", "SSL", "CA certificates for client verification.";
    "suppress_ragged_eofs", ["--suppress-ragged-eofs"], "", Kind::Flag, "True", "SSL", "Suppress ragged EOFs.";
    "do_handshake_on_connect", ["--do-handshake-on-connect"], "", Kind::Flag, "", "SSL", "Handshake on connect.";
    "ciphers", ["--ciphers"], "VALUE", Kind::Str, "", "SSL", "The TLS cipher list.";
    "http_protocols", ["--http-protocols"], "STRING", Kind::Str, "h1", "HTTP/2", "HTTP versions, in ALPN order: h1, h2.";
    "http2_cleartext", ["--http2-cleartext"], "STRING", Kind::Choice(&["off", "prior-knowledge", "upgrade", "both"]), "off", "HTTP/2", "h2c mode.";
    "http2_max_concurrent_streams", ["--http2-max-concurrent-streams"], "INT", ONE, "100", "HTTP/2", "Streams per connection.";
    "http2_initial_window_size", ["--http2-initial-window-size"], "INT", POS, "65535", "HTTP/2", "Initial flow-control window.";
    "http2_max_frame_size", ["--http2-max-frame-size"], "INT", POS, "16384", "HTTP/2", "Max frame size.";
    "http2_max_header_list_size", ["--http2-max-header-list-size"], "INT", POS, "65536", "HTTP/2", "Max header list size.";
    "raw_paste_global_conf", ["--paste-global"], "CONF", Kind::List, "", "Server Mechanics", "PasteDeploy globals; repeatable.";
    "permit_obsolete_folding", ["--permit-obsolete-folding"], "", Kind::Flag, "", "Server Mechanics", "Accept obs-fold header lines.";
    "strip_header_spaces", ["--strip-header-spaces"], "", Kind::Flag, "", "Server Mechanics", "Strip spaces before the header colon (unsafe).";
    "permit_unconventional_http_method", ["--permit-unconventional-http-method"], "", Kind::Flag, "", "Server Mechanics",
        "Accept methods shorter than 3 or longer than 20 characters, lowercase, or with `#`.";
    "permit_unconventional_http_version", ["--permit-unconventional-http-version"], "", Kind::Flag, "", "Server Mechanics",
        "Accept HTTP versions other than 1.0 and 1.1.";
    "casefold_http_method", ["--casefold-http-method"], "", Kind::Flag, "", "Server Mechanics", "Uppercase request methods.";
    "forwarder_headers", ["--forwarder-headers"], "VALUE", Kind::Str, "SCRIPT_NAME,PATH_INFO", "Server Mechanics",
        "Headers with underscores a trusted forwarder may set in the environ.";
    "header_map", ["--header-map"], "VALUE", Kind::Choice(&["drop", "refuse", "dangerous"]), "drop", "Server Mechanics",
        "Headers with `_` in their name: drop, refuse (400) or dangerous (map).";
    "asgi_loop", ["--asgi-loop"], "STRING", Kind::Choice(&["auto", "asyncio", "uvloop"]), "auto", "ASGI", "The asyncio event loop.";
    "asgi_lifespan", ["--asgi-lifespan"], "STRING", Kind::Choice(&["auto", "on", "off"]), "auto", "ASGI", "The lifespan protocol.";
    "asgi_disconnect_grace_period", ["--asgi-disconnect-grace-period"], "INT", POS, "3", "ASGI", "Seconds after a disconnect before the app task is cancelled.";
    "websocket_max_message_size", ["--websocket-max-message-size"], "INT", POS, "16777216", "ASGI", "Max WebSocket message size (0 = no limit).";
    "websocket_ping_interval", ["--websocket-ping-interval"], "INT", POS, "20", "ASGI",
        "ferricorn: seconds between the server's WebSocket pings, counted from the last pong (uvicorn's `--ws-ping-interval`). 0 = no pings.";
    "websocket_ping_timeout", ["--websocket-ping-timeout"], "INT", POS, "20", "ASGI",
        "ferricorn: seconds a WebSocket ping may wait for its pong before the session is closed with 1011 (uvicorn's `--ws-ping-timeout`). 0 = wait for ever.";
    "http_parser", ["--http-parser"], "STRING", Kind::Choice(&["auto", "fast", "python"]), "auto", "Worker Processes", "Accepted for compatibility: the parser is always hyper's.";
    "root_path", ["--root-path"], "STRING", Kind::Str, "", "Server Mechanics", "The ASGI mount prefix (`root_path`). WSGI apps ignore it, as in Gunicorn 27: their mount point is the `SCRIPT_NAME` environment variable.";
    "dirty_apps", ["--dirty-app"], "STRING", Kind::List, "", "Dirty Arbiters", "Dirty apps; repeatable.";
    "dirty_workers", ["--dirty-workers"], "INT", POS, "0", "Dirty Arbiters", "Dirty worker processes.";
    "dirty_timeout", ["--dirty-timeout"], "INT", POS, "300", "Dirty Arbiters", "Dirty task timeout.";
    "dirty_threads", ["--dirty-threads"], "INT", ONE, "1", "Dirty Arbiters", "Threads per dirty worker.";
    "dirty_graceful_timeout", ["--dirty-graceful-timeout"], "INT", POS, "30", "Dirty Arbiters", "Dirty graceful timeout.";
    "on_dirty_starting", [], "", Kind::Python, "", "Dirty Arbiter Hooks", "Dirty hook.";
    "dirty_post_fork", [], "", Kind::Python, "", "Dirty Arbiter Hooks", "Dirty hook.";
    "dirty_worker_init", [], "", Kind::Python, "", "Dirty Arbiter Hooks", "Dirty hook.";
    "dirty_worker_exit", [], "", Kind::Python, "", "Dirty Arbiter Hooks", "Dirty hook.";
    "control_socket", ["--control-socket"], "PATH", Kind::Str, "", "Control", "Unix socket for `gunicornc` (show workers/stats/config/listeners, worker add/remove/kill, reload, reopen, shutdown). Empty: `$XDG_RUNTIME_DIR/gunicorn.ctl`, else `~/.gunicorn/gunicorn.ctl`.";
    "control_socket_mode", ["--control-socket-mode"], "INT", Kind::AutoInt, "0o600", "Control", "Permission bits of the control socket.";
    "control_socket_disable", ["--no-control-socket"], "", Kind::Flag, "", "Control", "Do not create the control socket.";
];
