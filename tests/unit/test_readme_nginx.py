"""The README's nginx configuration is the one the suite runs (``tests/nginx.py``)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.nginx import CONF

README = Path(__file__).resolve().parents[2] / "README.md"
# Lines that name the reader's own files, hosts and ports, not devtrust's part.
THEIRS = ("listen", "server_name", "ssl_certificate", "ssl_client_certificate", "upstream",
          "proxy_pass http://127.0.0.1")  # fmt: skip


def test_every_devtrust_line_of_the_readmes_nginx_block_is_in_the_tested_configuration() -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Protecting an app with devtrust.*?```nginx\n(.*?)```", text, re.S)
    assert block is not None, "the README has no nginx block under its section"
    tested = {line.strip() for line in CONF.replace("{{", "{").replace("}}", "}").splitlines()}
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    ours = [line for line in lines if line and not line.startswith(THEIRS) and line != "}"]
    assert len(ours) > 20
    missing = [line for line in ours if line not in tested]
    assert not missing, missing
