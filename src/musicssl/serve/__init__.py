"""``musicssl serve``: a local web page and HTTP API for key and beats.

Needs the optional ``serve`` extra (FastAPI, uvicorn, python-multipart):
``pip install 'musicssl[serve]'``. :mod:`musicssl.serve.analysis` holds the
HTTP-free part (limits, worker pool, records), :mod:`musicssl.serve.app` the
ASGI application, ``static/`` the page.
"""
