"""Authenticated JSON calls to a cloud's REST API with the instance's own identity.

The GCP and Azure node-group scalers (gcp.py, azure.py) make three or four calls each. Their
official SDKs (google-cloud-compute, azure-mgmt-compute) are large generated packages (the Azure
one ships every API version) that the gateway instance would install for those few calls, so the
calls are plain HTTPS with aiohttp (already a dependency), and the bearer token comes from the
instance's metadata server: the instance's service account (GCP) or managed identity (Azure),
never a key in configuration. Both base URLs are parameters so tests can aim them at a stand-in.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from gpustack_iac.errors import GpustackError

# A token is fetched again this long before it expires (a call must not carry a dying one).
REFRESH_MARGIN = 60.0


@dataclass(frozen=True)
class MetadataToken:
    """Where the instance's metadata server hands out an access token, and the header it demands."""

    url: str
    header: tuple[str, str]

    @staticmethod
    def gcp(metadata: str = "http://metadata.google.internal") -> "MetadataToken":
        return MetadataToken(f"{metadata}/computeMetadata/v1/instance/service-accounts/default/token",
                             ("Metadata-Flavor", "Google"))

    @staticmethod
    def azure(metadata: str = "http://169.254.169.254", resource: str = "https://management.azure.com/",
              client_id: str | None = None) -> "MetadataToken":
        # A user-assigned identity is named by its client id (IMDS needs it once a VM has several).
        who = f"&client_id={client_id}" if client_id else ""
        return MetadataToken(f"{metadata}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}{who}",
                             ("Metadata", "true"))


class RestClient:
    """JSON over HTTPS with a bearer token from the metadata server, refreshed before it expires."""

    def __init__(self, cloud: str, token: MetadataToken, timeout: float = 30.0) -> None:
        self.cloud = cloud
        self._token_source = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._expires = 0.0

    async def call(self, method: str, url: str, body: Any = None, what: str = "") -> Any:
        """The answer's JSON (None for an empty body); any error status is one GpustackError."""
        session = self._open()
        headers = {"Authorization": f"Bearer {await self._bearer(session)}"}
        try:
            async with session.request(method, url, json=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise GpustackError(f"{self.cloud}: cannot {what}: HTTP {resp.status}: {_message(text)}")
                return await resp.json(content_type=None) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GpustackError(f"{self.cloud}: cannot {what}: {exc or type(exc).__name__}") from None

    async def _bearer(self, session: aiohttp.ClientSession) -> str:
        if self._token and time.monotonic() < self._expires - REFRESH_MARGIN:
            return self._token
        src = self._token_source
        try:
            async with session.get(src.url, headers=dict([src.header])) as resp:
                if resp.status != 200:
                    raise GpustackError(f"{self.cloud}: the metadata server gave no token: HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GpustackError(f"{self.cloud}: cannot get a token from the metadata server: {exc}") from None
        self._token = str(data["access_token"])
        # Azure's IMDS answers expires_in as a string, GCP's as a number.
        self._expires = time.monotonic() + float(data.get("expires_in", 300))
        return self._token

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _message(text: str) -> str:
    """The error's own message where the body is the cloud's JSON error, else the body's start."""
    try:
        err = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text[:200]
    if isinstance(err, dict):
        # The code is what callers classify (SkuNotAvailable, QUOTA_EXCEEDED): keep it with the message.
        # (GCP's code is the HTTP status again: only a named code is worth repeating.)
        code, message = err.get("code"), err.get("message")
        named = isinstance(code, str) and code
        return (f"{code}: {message}" if named and message else str(message or code or err))[:300]
    return str(err or text)[:300]
