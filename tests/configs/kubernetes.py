# gunicorn.conf.py for a pod behind an ingress controller / load balancer that
# terminates TLS: trust the proxy (its address is not known in advance), take the scheme
# from X-Forwarded-Proto only, keep idle connections open longer than the load balancer's
# idle timeout, and give in-flight requests time to finish when the pod is terminated.
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
forwarded_allow_ips = '*'
secure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
