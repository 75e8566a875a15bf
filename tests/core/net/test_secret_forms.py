"""A credential a server echoes back is masked in whatever form it comes back in (findings 7, 8, 9, 12).

Against a real local server that quotes every credential it receives, JSON-escaped, URL-encoded,
HTML-escaped and Base64-encoded, inside the whole Authorization value and as ``user:password``.
"""
from __future__ import annotations

import base64
import logging

import pytest

from forwarder_core import hookimpl
from forwarder_core.errors import AuthError, HttpError, TransportError
from forwarder_core.metrics import Metrics
from forwarder_core.net.bodies import snippet
from forwarder_core.net.client import BearerAuth, HttpClient
from forwarder_core.secrets import Secret, redact, register_secret_text
from tests.fakes.echo import EchoServer, echo_forms

TOKEN = "2/1204/1207:fOrMs-t0ken+x=9"  # an Asana personal access token has this shape


def _client(server: EchoServer, **kw) -> HttpClient:  # type: ignore[no-untyped-def]
    return HttpClient(component="forms", options={"base_url": server.url, "timeout": 5}, metrics=Metrics(),
                      backoff_factor=0.01, **kw)


def _assert_masked(text: str, *values: str) -> None:
    for value in values:
        for form in echo_forms(value):
            assert form not in text, f"{form!r} in {text[:400]!r}"


def test_every_derived_form_of_a_registered_secret_is_masked() -> None:
    register_secret_text(TOKEN)
    for form in echo_forms(TOKEN):
        assert redact(f"before {form} after") == "before *** after", form


def test_a_token_echoed_json_escaped_or_url_encoded_in_an_error_body_is_masked(
        caplog: pytest.LogCaptureFixture) -> None:
    """Finding 7: ``2\\/1204\\/...`` or ``2%2F1204...`` in a 400 body reached the log, the once summary and sqlite."""
    caplog.set_level(logging.DEBUG)
    with EchoServer(400) as server, pytest.raises(HttpError) as info:
        _client(server, auth=BearerAuth(Secret(TOKEN))).get_json("/audit")
    error = info.value
    assert "400" in str(error) and "***" in str(error)
    _assert_masked(str(error) + error.body + repr(error.headers), TOKEN, f"Bearer {TOKEN}")
    _assert_masked(caplog.text, TOKEN, f"Bearer {TOKEN}")


def test_the_base64_of_user_and_password_in_a_basic_header_is_masked() -> None:
    """Finding 8: elastic_bulk sets ``Authorization: Basic base64(user:password)`` on its session."""
    password = "b4sic-pAss/wOrd+9"
    Secret(password)
    basic = "Basic " + base64.b64encode(f"forwarder:{password}".encode()).decode()
    with EchoServer(401) as server:
        client = _client(server)
        client.session.headers["Authorization"] = basic
        with pytest.raises(AuthError) as info:
            client.get_json("/_bulk")
    _assert_masked(str(info.value), password, basic, basic[6:], f"forwarder:{password}")


def test_a_token_with_a_line_break_never_appears_in_the_invalid_header_error() -> None:
    """Finding 9: requests' InvalidHeader quoted the whole ``Bearer <token>\\n``."""
    token = "line-brEak-t0ken-77\n"
    with EchoServer(200) as server, pytest.raises(TransportError) as info:
        _client(server, auth=BearerAuth(Secret(token)), max_tries=1).get_json("/x")
    assert "header is not valid" in str(info.value)
    assert "line-brEak" not in str(info.value)


def test_a_secret_split_by_the_cut_leaves_no_head_behind() -> None:
    from forwarder_core.secrets import redact_cut

    secret = "cUt-secret-0123456789abcdef"
    register_secret_text(secret)
    for at in range(0, 40):
        text = "x" * at + secret + "y" * 50
        for limit in (10, 20, 30, 45):
            assert "cUt-se" not in redact_cut(text, limit)
            assert "cUt-se" not in snippet(text, limit)


def test_forwarder_configure_receives_secrets_wrapped(forwarder_once) -> None:  # type: ignore[no-untyped-def]
    """Finding 12: plugins got the plaintext token; a raise quoting the document printed it."""
    token = "c0nfigure-t0ken-5ecret"
    seen: list = []

    class Plugin:
        @hookimpl
        def forwarder_configure(self, config):  # type: ignore[no-untyped-def]
            seen.append(config)

    forwarder_once(raw_events=[], plugins=[Plugin()],
                   output={"type": "splunk_hec", "options": {"url": "http://127.0.0.1:9", "token": token}})
    options = seen[0]["outputs"][0]["options"]
    assert isinstance(options["token"], Secret) and options["token"].reveal() == token
    assert token not in repr(seen[0]) and token not in str(seen[0])


def test_any_header_built_from_a_secret_is_masked_with_its_derived_forms() -> None:
    """A vendor's own header (``X-Vendor-Auth: key=<secret>;v=2``): its Base64 holds no known form
    of the secret, so the whole value must be registered when it is sent."""
    secret = Secret("hEader-built-s3cret")
    value = f"key={secret.reveal()};v=2"
    with EchoServer(400, extra=[value]) as server, pytest.raises(HttpError) as info:
        _client(server).get_json("/x", headers={"X-Vendor-Auth": value})
    _assert_masked(str(info.value) + info.value.body, value)
