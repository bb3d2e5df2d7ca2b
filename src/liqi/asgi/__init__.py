"""ASGI plumbing shared by the model server and the gateway: types, bodies, answers, CORS,
listening sockets, the service-token check.
"""
