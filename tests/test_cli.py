"""The CLI at a runbook's pace: exact flags only, whole names when piped, machine formats, one-line failures
(also against things that are not a linkd admin API), the --link guard on promote/failover."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

LONG_LINK = "primary-datacenter-frankfurt-" + "x" * 70


@pytest.mark.timeout(60)
def test_version_and_no_prefix_matching(linkd_factory):
    daemon = linkd_factory(start=False)
    assert daemon.cli("--version").stdout.strip().startswith("linkd ")
    result = daemon.cli("link", "create", "l", "--bootstrap", "127.0.0.1:1", "--no-validate")
    assert result.returncode == 2 and "unrecognized arguments: --bootstrap" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("linkd: ")
    result = daemon.cli("serve", "--data", "/tmp/nowhere", "--print-config")
    assert result.returncode == 2 and "unrecognized arguments: --data " in result.stderr, result.stderr


@pytest.mark.timeout(90)
def test_piped_tables_keep_whole_names_and_machine_formats_agree(linkd):
    created = linkd.cli("link", "create", LONG_LINK, "--bootstrap-server", "127.0.0.1:1", "--no-validate")
    assert created.returncode == 0, created.stderr
    table = linkd.cli("link", "list")  # stdout is a pipe here
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split()[:2] == ["LINK", "STATE"]
    assert row.split()[0] == LONG_LINK, table.stdout
    def stable(links):  # the link's state moves on while the source stays unreachable; these do not
        return [(k["link_name"], k["link_id"], k["bootstrap_servers"], k["configs"], sorted(k)) for k in links]

    as_json = stable(json.loads(linkd.cli("link", "list", "--json").stdout))
    assert stable(json.loads(linkd.cli("link", "list", "-o", "json").stdout)) == as_json
    assert stable(yaml.safe_load(linkd.cli("link", "list", "-o", "yaml").stdout)) == as_json
    described = json.loads(linkd.cli("link", "describe", LONG_LINK, "--json").stdout)
    in_yaml = yaml.safe_load(linkd.cli("link", "describe", LONG_LINK, "--output-format", "yaml").stdout)
    assert set(in_yaml) == set(described)  # the task timestamps move between the two calls; the rest does not
    assert (in_yaml["link_name"], in_yaml["configs"]) == (described["link_name"], described["configs"])
    clash = linkd.cli("link", "list", "--json", "-o", "yaml")
    assert clash.returncode == 2 and "disagree" in clash.stderr


def _one_line_failure(result) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_the_kafka_port_as_admin_address_is_one_line(linkd):
    line = _one_line_failure(linkd.cli("mirror", "list", "--admin", linkd.bootstrap))
    assert f"{linkd.bootstrap} does not answer as a linkd admin API (is that the Kafka port?)" in line


class _Html(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        page = b"<html><body>" + b"<p>some other web app</p>" * 200 + b"</body></html>"
        self.send_response(200 if self.path == "/kafka/v3/clusters" else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


class _JsonElsewhere(_Html):
    def do_GET(self):  # noqa: N802
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("handler", [_Html, _JsonElsewhere], ids=["html-page", "other-json-api"])
def test_another_http_server_is_one_line(linkd_factory, handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        line = _one_line_failure(linkd_factory(start=False).cli("link", "list", "--admin", address))
        assert "does not answer as a linkd admin API" in line and "<html" not in line
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_a_silent_tcp_port_is_one_line(linkd_factory):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up():
            conn, _ = listener.accept()
            conn.recv(100)
            conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        line = _one_line_failure(linkd_factory(start=False).cli("link", "list", "--admin", f"127.0.0.1:{port}"))
    assert "does not answer as a linkd admin API" in line


@pytest.mark.timeout(90)
def test_promote_and_failover_check_the_mirrors_link(linkd):
    assert linkd.cli("link", "create", "right", "--bootstrap-server", "127.0.0.1:1", "--no-validate").returncode == 0
    for action in ("promote", "failover"):
        line = _one_line_failure(linkd.cli("mirror", action, "some-topic", "--link", "nope"))
        assert "nope" in line, line
    # The right link but a topic that is no mirror on it: refused by the daemon, nothing failed over.
    result = linkd.cli("mirror", "failover", "not-a-mirror", "--link", "right", "--json")
    assert result.returncode != 0


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` with the generated script loaded."""
    import shlex
    import subprocess

    line = " ".join(shlex.quote(w) for w in words) if words[-1] else " ".join(shlex.quote(w) for w in words[:-1]) + ' ""'
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _linkd_complete; printf "%s\\n" "${{COMPREPLY[@]}}"'
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.timeout(60)
def test_bash_completion_knows_commands_options_and_choices(linkd_factory):
    script = linkd_factory(start=False).cli("completion", "bash").stdout
    assert _complete(script, "linkd", "mir") == ["mirror"]
    assert {"promote", "failover", "list", "describe"} <= set(_complete(script, "linkd", "mirror", ""))
    assert _complete(script, "linkd", "mirror", "promote", "orders", "--li") == ["--link"]
    assert _complete(script, "linkd", "link", "list", "-o", "") == ["human", "json", "yaml"]
    assert "--admin-basic-auth-file" in _complete(script, "linkd", "serve", "--admin-b")
