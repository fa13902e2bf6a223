"""Serving a trained run: an HTTP API, a web page, and new users folded in.

:mod:`ncf.serve.service` answers without HTTP (loaded run, raw ids in and out);
:mod:`ncf.serve.app` puts FastAPI in front of it and ships the page (``static/``). The
fold-in itself is :mod:`ncf.foldin`, usable from the library. FastAPI and uvicorn come with
the ``serve`` extra: ``pip install 'ncf[serve]'``.
"""

from __future__ import annotations
