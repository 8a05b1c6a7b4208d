"""The dashboard driven over HTTP as a browser would (no JavaScript): the login form,
the session cookie and the CSRF token every form carries."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from tests.cloudrunner import CloudRunner

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def dashboard_url(cloud: CloudRunner) -> str:
    return f"http://127.0.0.1:{cloud.config.ports.dashboard}"


class Dashboard:
    """One user's browser, as far as the server can tell."""

    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=90)
        login = self.http.get("/login")
        form = {"csrf_token": CSRF.search(login.text)[1], "domain": "Default"}
        answer = self.http.post("/login", data={**form, "username": user, "password": password})
        assert answer.status_code == 303, answer.text
        self.csrf = CSRF.search(self.http.get("/").text)[1]

    def get(self, path: str, status: int = 200) -> httpx.Response:
        answer = self.http.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:2000])
        return answer

    def page(self, path: str, status: int = 200) -> str:
        return self.get(path, status).text

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)

    def submit(self, path: str, data: dict[str, Any] | None = None) -> str:
        """A form that succeeds: the redirect's target."""
        answer = self.post(path, data)
        assert answer.status_code == 303, (path, answer.status_code, alerts(answer.text))
        location = answer.headers["location"]
        assert "error=" not in location, html.unescape(location)
        return location

    def refused(self, path: str, data: dict[str, Any], status: int) -> str:
        """A form the API refuses: the page again, with the API's status and message."""
        answer = self.post(path, data)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:2000])
        return answer.text

    def close(self) -> None:
        self.http.close()


def alerts(page: str) -> list[str]:
    """The error messages a page shows (role=alert), as text."""
    found = re.findall(r'<p class="error" role="alert">(.*?)</p>', page, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", a)) for a in found]
