# Environment and import paths set from the config: raw_env for the settings module,
# chdir into the project, pythonpath for a sibling package.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 1
raw_env = ["FOO=bar", "DJANGO_SETTINGS_MODULE=project.settings.production", "WITH_EQUALS=a=b"]
chdir = os.environ["PROJECT_DIR"]
pythonpath = os.environ["EXTRA_PYTHONPATH"]
