# A production config that sets most of the commonly tuned settings, in their various
# accepted forms (lists and strings, octal ints, dicts, hook functions), for the
# --print-config comparison with Gunicorn.
import os

bind = ["127.0.0.1:9000", "unix:/run/mysite/mysite.sock"]
backlog = 512
workers = 4
worker_class = "gthread"
threads = 8
worker_connections = 500
max_requests = 2000
max_requests_jitter = 200
timeout = 90
graceful_timeout = 45
keepalive = 10
limit_request_line = 10000
limit_request_fields = 50
limit_request_field_size = 0
preload_app = True
reuse_port = True
sendfile = False
chdir = os.path.dirname(os.path.abspath(__file__))
raw_env = ["DJANGO_SETTINGS_MODULE=site.settings", "WITH_EQUALS=a=b=c"]
pidfile = "/run/mysite/mysite.pid"
worker_tmp_dir = "/dev/shm"
umask = 0o027
user = os.getuid()
group = os.getgid()
pythonpath = "/srv/app/src,/srv/app/lib"
proc_name = "mysite"

accesslog = "-"
errorlog = os.environ.get("ERROR_LOG", "/var/log/mysite/error.log")
loglevel = "warning"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%({x-request-id}i)s"'
capture_output = True
statsd_host = "localhost:8125"
statsd_prefix = "mysite"
dogstatsd_tags = "env:prod,service:web"
syslog_addr = "udp://logs.example.com:514"
logconfig_dict = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

forwarded_allow_ips = "10.0.0.0/8,127.0.0.1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https", "X-SCHEME": "https"}
proxy_protocol = "v1"
proxy_allow_ips = "10.0.0.0/8"
header_map = "refuse"
http_protocols = "h1"
ciphers = "ECDHE+AESGCM"
reload_extra_files = [os.path.join(chdir, "conf_app.py")]


def on_starting(server):
    server.log.info("starting")


def post_fork(server, worker):
    pass


def post_request(worker, req, environ, resp):
    pass


def worker_exit(server, worker):
    pass
