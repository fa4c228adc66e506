"""HTTP client for the admin API, used by the CLI (and by runbooks through the CLI)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import httpx

DEFAULT_ADMIN = "127.0.0.1:8090"


class AdminClientError(Exception):
    """A one-line reason suitable for stderr; ``status`` is the HTTP status when the API answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _raise(status: int, body: dict):
    message = " ".join(str(body.get("message") or f"HTTP {status}").split())
    raise AdminClientError(message, status)


class AdminClient:
    """``address`` is HOST:PORT (http) or a full ``https://HOST:PORT``. Credentials: ``username``/``password``
    for HTTP Basic (else ``$LINKD_ADMIN_USER``/``$LINKD_ADMIN_PASSWORD``), ``ca`` to verify an HTTPS admin API
    (else ``$LINKD_ADMIN_CA``), ``cert``/``key`` for mTLS (else ``$LINKD_ADMIN_CERT``/``$LINKD_ADMIN_KEY``)."""

    def __init__(self, address: str | None = None, timeout: float = 30.0, *, username: str | None = None, password: str | None = None,
                 ca: str | None = None, cert: str | None = None, key: str | None = None) -> None:
        address = address or os.environ.get("LINKD_ADMIN") or DEFAULT_ADMIN
        self.base = address if address.startswith(("http://", "https://")) else f"http://{address}"
        self.address = self.base.split("://", 1)[1].rstrip("/")
        username = username or os.environ.get("LINKD_ADMIN_USER")
        password = password if password is not None else os.environ.get("LINKD_ADMIN_PASSWORD")
        if username and password is None:
            raise AdminClientError("--admin-user needs a password in LINKD_ADMIN_PASSWORD")
        ca = ca or os.environ.get("LINKD_ADMIN_CA")
        cert, key = cert or os.environ.get("LINKD_ADMIN_CERT"), key or os.environ.get("LINKD_ADMIN_KEY")
        verify: Any = True
        if ca or cert:
            import ssl

            verify = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            if cert:
                verify.load_cert_chain(cert, key)
        self._http = httpx.Client(base_url=self.base, timeout=timeout, verify=verify,
                                  auth=httpx.BasicAuth(username, password or "") if username else None)
        self._cluster_id: str | None = None

    def close(self) -> None:
        self._http.close()

    def _not_linkd(self, why: str) -> AdminClientError:
        return AdminClientError(f"{self.address} does not answer as a linkd admin API (is that the Kafka port?): {why}")

    def _call(self, method: str, path: str, timeout: float | None = None, **kwargs) -> Any:
        return self._decode(self._send(method, path, timeout, **kwargs))

    def _send(self, method: str, path: str, timeout: float | None = None, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, timeout=timeout or self._http.timeout, **kwargs)
        except httpx.ConnectError as exc:
            raise AdminClientError(f"cannot reach the linkd admin API at {self.base} (is `linkd serve` running? set --admin or LINKD_ADMIN): {_one_line(exc)}") from exc
        except httpx.TimeoutException as exc:
            raise AdminClientError(f"the linkd admin API at {self.base} did not answer in time") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # A Kafka listener reads "GET " as a 1.2 GB frame size and hangs up: no HTTP answer at all.
            raise self._not_linkd(f"no HTTP answer ({_one_line(exc)})") from exc
        except httpx.HTTPError as exc:
            raise AdminClientError(f"admin API request to {self.base} failed: {_one_line(exc)}") from exc
        return response

    def _created(self, response: httpx.Response) -> str:
        """The path a 204 create answered in Location (Confluent answers a create with no body)."""
        answer = self._decode(response)
        location = response.headers.get("location")
        if answer is not None or not location:
            raise self._not_linkd(f"HTTP {response.status_code} to a create without Location")
        return httpx.URL(location).path

    def _decode(self, response: httpx.Response) -> Any:
        kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if response.status_code == 204 or (not response.content and response.status_code < 400):
            return None
        if kind != "application/json":
            raise self._not_linkd(f"HTTP {response.status_code} with {kind or 'no content type'}, not JSON")
        try:
            body = response.json()
        except ValueError as exc:
            raise self._not_linkd(f"HTTP {response.status_code} with a body that is not JSON") from exc
        if response.status_code >= 400:
            if not isinstance(body, dict) or "message" not in body:
                raise self._not_linkd(f"HTTP {response.status_code} without linkd's error shape")
            return _raise(response.status_code, body)
        return body

    @property
    def cluster(self) -> str:
        if self._cluster_id is None:
            answer = self._call("GET", "/kafka/v3/clusters")
            try:
                self._cluster_id = answer["data"][0]["cluster_id"]
            except (TypeError, KeyError, IndexError):
                raise self._not_linkd("GET /kafka/v3/clusters has no cluster id") from None
        return f"/kafka/v3/clusters/{self._cluster_id}"

    def create_link(self, name: str, configs: dict[str, str], validate: bool = True) -> dict:
        """Creates the link and returns its describe (the create itself answers 204, as Confluent's)."""
        created = self._created(self._send(
            "POST",
            f"{self.cluster}/links",
            params={"link_name": name, "validate_link": str(validate).lower()},
            json={"configs": [{"name": k, "value": v} for k, v in configs.items()]},
        ))
        return self._call("GET", created, params={"include_tasks": "true"})

    def list_links(self) -> list[dict]:
        return self._call("GET", f"{self.cluster}/links")["data"]

    def describe_link(self, name: str, include_tasks: bool = True) -> dict:
        return self._call("GET", f"{self.cluster}/links/{name}", params={"include_tasks": "true" if include_tasks else "false"})

    def delete_link(self, name: str, force: bool = False) -> list[dict]:
        """Returns the failover results of the mirrors ``force`` stopped (empty when there were none)."""
        answer = self._call("DELETE", f"{self.cluster}/links/{name}", params={"force": str(force).lower()})
        return (answer or {}).get("data", [])

    def link_configs(self, name: str) -> list[dict]:
        return self._call("GET", f"{self.cluster}/links/{name}/configs")["data"]

    def alter_link_configs(self, name: str, set_configs: dict[str, str], delete_configs: list[str], validate_only: bool = False) -> None:
        data = [{"name": k, "value": v} for k, v in set_configs.items()] + [{"name": k, "operation": "DELETE"} for k in delete_configs]
        self._call("PUT", f"{self.cluster}/links/{name}/configs:alter", json={"data": data, "validate_only": validate_only})

    def create_mirror(self, topic: str | None, link: str, source_topic: str | None = None) -> dict:
        body = {"mirror_topic_name": topic, **({"source_topic_name": source_topic} if source_topic else {})}
        return self._call("GET", self._created(self._send("POST", f"{self.cluster}/links/{link}/mirrors", json=body)))

    def list_mirrors(self, link: str | None = None, mirror_status: str | None = None) -> list[dict]:
        params = {"mirror_status": mirror_status} if mirror_status else {}
        return self._call("GET", f"{self.cluster}/links/{link or '-'}/mirrors", params=params)["data"]

    def describe_mirror(self, topic: str) -> dict:
        return self._call("GET", f"{self.cluster}/links/-/mirrors/{topic}")

    def mirror_action(self, action: str, topics: list[str] | None, timeout_s: float | None = None, link: str | None = None,
                      validate_only: bool = False, pattern: str | None = None) -> list[dict]:
        """``link``: the daemon refuses topics that are not mirrors on that link (as Confluent's CLI checks).
        ``pattern``: a regular expression over mirror names instead of ``topics``. ``validate_only``: the
        answers the command would get; nothing changes (the CLI's ``--dry-run``)."""
        body: dict[str, Any] = {"mirror_topic_name_pattern": pattern} if pattern is not None else {"mirror_topic_names": topics}
        if timeout_s is not None:
            body["timeout_ms"] = int(timeout_s * 1000)
        wait = (timeout_s or 60) + 30 if action == "promote" and not validate_only else None
        params = {"validate_only": "true"} if validate_only else {}
        return self._call("POST", f"{self.cluster}/links/{link or '-'}/mirrors:{action}", json=body, params=params, timeout=wait)["data"]

    def verify_step(self, topic: str, partition: int, from_offset: int | None = None, end_offset: int | None = None) -> dict:
        body: dict[str, Any] = {"mirror_topic_name": topic, "partition": partition, "from_offset": from_offset, "end_offset": end_offset}
        return self._call("POST", f"{self.cluster}/links/-/mirrors:verify", json=body, timeout=120)["data"]

    def lost_records(self, topic: str, partition: int):
        """A streaming response with the source's batches of ``partition``'s lost offsets (use as a
        context manager; ``iter_bytes()`` yields them)."""
        return _Stream(self, f"{self.cluster}/links/-/mirrors/{topic}/lost-records", {"partition": str(partition)})


class _Stream:
    def __init__(self, client: AdminClient, path: str, params: dict) -> None:
        self._client, self._path, self._params = client, path, params
        self._cm: contextlib.AbstractContextManager[httpx.Response] | None = None

    def __enter__(self) -> httpx.Response:
        try:
            self._cm = self._client._http.stream("GET", self._path, params=self._params, timeout=None)
            response = self._cm.__enter__()
        except httpx.ConnectError as exc:
            raise AdminClientError(f"cannot reach the linkd admin API at {self._client.base}: {_one_line(exc)}") from exc
        except httpx.HTTPError as exc:
            raise self._client._not_linkd(f"no HTTP answer ({_one_line(exc)})") from exc
        if response.status_code >= 400:
            response.read()
            self._cm.__exit__(None, None, None)
            self._client._decode(response)  # raises the one-line reason
        return response

    def __exit__(self, *exc) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
