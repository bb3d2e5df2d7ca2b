"""The control plane's process: its app, runtime, daemon, home folder and long-lived parts."""
