# A debugging config: everything at debug level into one file, the app's own
# print()s captured into it, and a process name to find the processes with ps.
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 1
loglevel = "debug"
errorlog = os.environ.get("ERROR_LOG", "-")
capture_output = True
proc_name = "conf-test-app"
