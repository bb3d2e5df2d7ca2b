"""The serving tests share the session fixture mnist_saved_model of tests/conftest.py."""
