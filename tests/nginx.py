"""A real nginx (Debian's ``nginx-light``) in front of a tiny upstream, asking devtrust's
``/v1/access/check`` on every request (``auth_request``), with the device CA as its
client CA: the configuration the README's "Protecting an app with devtrust" shows."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ceremony.tls import self_signed_pair
from tests.processes import free_port, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# The README's configuration, with the test's ports and files filled in.
CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream devtrust {{ server {devtrust}; keepalive 16; }}

    # The app: a tiny upstream that says who devtrust let through.
    server {{
        listen 127.0.0.1:{app_port};
        location / {{
            default_type text/plain;
            return 200 "app: user=$http_x_devtrust_user device=$http_x_devtrust_asset_tag\\n";
        }}
    }}

    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        # devtrust's device CA; "optional" so that a request without a certificate
        # reaches devtrust, which answers 401 in its own words.
        ssl_client_certificate {device_ca};
        ssl_verify_client optional;

        location = /_devtrust {{
            internal;
            proxy_pass http://devtrust/v1/access/check;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            # Always set, never passed on: a header the client sent is overwritten (and
            # dropped when there is no verified certificate).
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
            proxy_set_header X-Original-URI $request_uri;
        }}
        # The same auth_request in front of a route that does nothing (bench/access.py).
        location = /_noop {{
            internal;
            proxy_pass http://devtrust{noop_path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location = /noop-guarded {{
            auth_request /_noop;
            proxy_pass http://127.0.0.1:{app_port}/;
        }}

        location / {{
            auth_request /_devtrust;
            auth_request_set $devtrust_user $upstream_http_x_devtrust_user;
            auth_request_set $devtrust_device $upstream_http_x_devtrust_device_id;
            auth_request_set $devtrust_tag $upstream_http_x_devtrust_asset_tag;
            auth_request_set $devtrust_level $upstream_http_x_devtrust_trust_level;
            proxy_set_header X-Devtrust-User $devtrust_user;
            proxy_set_header X-Devtrust-Device-Id $devtrust_device;
            proxy_set_header X-Devtrust-Asset-Tag $devtrust_tag;
            proxy_set_header X-Devtrust-Trust-Level $devtrust_level;
            proxy_pass http://127.0.0.1:{app_port};
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Nginx:
    url: str  # https://127.0.0.1:<port>
    server_ca: Path  # what a client trusts nginx's certificate with
    conf: Path


@contextmanager
def running_nginx(
    directory: Path, devtrust: str, device_ca: Path, *, noop_path: str = "/healthz"
) -> Iterator[Nginx]:
    """nginx on a free port in front of ``devtrust`` (host:port of ``devtrust serve``);
    ``/noop-guarded`` asks ``noop_path`` on it instead of the access check."""
    directory.mkdir(parents=True, exist_ok=True)
    port, app_port = free_port(), free_port()
    # nginx's own side of the TLS: devtrust's self-signed pair for 127.0.0.1, which a
    # client trusts as its CA.
    server = self_signed_pair(directory / "tls", "127.0.0.1")
    conf = directory / "nginx.conf"
    conf.write_text(CONF.format(dir=directory, devtrust=devtrust, port=port,
                                cert=server.cert_file, key=server.key_file,
                                app_port=app_port, device_ca=device_ca,
                                noop_path=noop_path))  # fmt: skip
    checked = subprocess.run([NGINX, "-t", "-p", str(directory), "-c", str(conf)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen([NGINX, "-p", str(directory), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: _listening(port) or proc.poll() is not None, 10, "nginx did not start")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield Nginx(f"https://127.0.0.1:{port}", server.cert_file, conf)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
