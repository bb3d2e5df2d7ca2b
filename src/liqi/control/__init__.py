"""The control plane behind the CLI, the SDK and the console: `liqi server`."""
