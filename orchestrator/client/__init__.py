"""The command-line client: ``./script client [--url URL] [--token T] [--json] COMMAND ...``.

Readable aligned tables by default; ``--json`` prints the server's JSON as is.
A failure prints the server's ``error`` message to stderr and exits 1 for a
4xx answer, 2 when the fabric is unreachable or answers 5xx. Never a traceback.
"""

from .api import DEFAULT_URL, TOKEN_HEADER, Api, ClientError
from .command_line import main, parser, protect_secrets
from .render import Out, fields, table

__all__ = [
    "DEFAULT_URL",
    "TOKEN_HEADER",
    "Api",
    "ClientError",
    "Out",
    "fields",
    "main",
    "parser",
    "protect_secrets",
    "table",
]
