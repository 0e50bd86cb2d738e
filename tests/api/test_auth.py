"""Bearer tokens and tenants: 401 without a valid token, 404 (never 403) on another tenant's
session for every verb, admins see everything, tokens never reach a log."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

import htcgrid
from htcgrid.api.auth import Role, TokenFile, create_token, load_tokens, parse_tokens
from htcgrid.api.serve import ApiThread
from htcgrid.client.http import HttpStore
from tests.api.conftest import TOKEN_A, TOKEN_ADMIN, TOKEN_B, bearer

NOOP = {"handler": "import:htcgrid.workloads:noop", "codec": "msgpack", "payload": "kQE="}


def new_session(client: httpx.Client, token: str, **body: object) -> str:
    r = client.post("/v1/sessions", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    sid: str = r.json()["session_id"]
    return sid


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing credentials"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing credentials"),
        ({"Authorization": "Bearer not-a-token"}, "not valid"),
        ({"Authorization": "Bearer"}, "missing credentials"),
    ],
)
def test_missing_or_wrong_token_is_401_with_a_clear_message(
    memory_api: ApiThread, headers: dict[str, str], message: str
) -> None:
    for method, path in [("GET", "/v1/info"), ("GET", "/v1/sessions"), ("POST", "/v1/sessions")]:
        r = httpx.request(method, memory_api.url + path, headers=headers, json={})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "Unauthorized" and message in r.json()["message"]


def test_health_needs_no_token(memory_api: ApiThread) -> None:
    assert httpx.get(memory_api.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(memory_api.url + "/readyz").json() == {"status": "ready"}


def test_the_remote_client_raises_unauthorized(memory_api: ApiThread) -> None:
    with pytest.raises(htcgrid.Unauthorized, match="not valid"):
        htcgrid.connect(memory_api.url, token="wrong")
    with pytest.raises(htcgrid.Unauthorized, match="HTCGRID_TOKEN"):
        HttpStore(memory_api.url, None)


def test_a_tenant_gets_404_on_another_tenants_session_for_every_verb(http: httpx.Client) -> None:
    sid = new_session(http, TOKEN_A, name="a's")
    r = http.post(f"/v1/sessions/{sid}/tasks", json={"tasks": [NOOP]})
    task_id = r.json()["task_ids"][0]
    http.put(f"/v1/sessions/{sid}/blobs/input-1", content=b"secret")
    b = bearer(TOKEN_B)
    verbs = [
        ("GET", f"/v1/sessions/{sid}", None),
        ("GET", f"/v1/sessions/{sid}/counts", None),
        ("GET", f"/v1/sessions/{sid}/finished", None),
        ("GET", f"/v1/sessions/{sid}/finished?wait=0.2", None),
        ("POST", f"/v1/sessions/{sid}/tasks", {"tasks": [NOOP]}),
        ("POST", f"/v1/sessions/{sid}/tasks/lookup", {"task_ids": [task_id]}),
        ("POST", f"/v1/sessions/{sid}/cancel", {}),
        ("POST", f"/v1/sessions/{sid}/cancel", {"task_ids": [task_id]}),
        ("GET", f"/v1/sessions/{sid}/blobs/input-1", None),
        ("PUT", f"/v1/sessions/{sid}/blobs/input-2", None),
        ("DELETE", f"/v1/sessions/{sid}", None),
    ]
    absent = sid[:-1] + ("0" if sid[-1] != "0" else "1")
    for method, path, body in verbs:
        theirs = http.request(method, path, json=body, headers=b)
        assert theirs.status_code == 404, (method, path, theirs.text)
        # exactly what an absent session answers, so the status says nothing about the id
        nobody = http.request(method, path.replace(sid, absent), json=body, headers=b)
        assert nobody.status_code == 404
        assert theirs.json()["message"] == nobody.json()["message"].replace(absent, sid)
    mine = http.get(f"/v1/sessions/{sid}").json()
    assert mine["counts"]["pending"] == 1 and not mine["is_cancelled"]
    assert http.get(f"/v1/sessions/{sid}/blobs/input-1").content == b"secret"


def test_list_shows_own_sessions_and_admin_sees_all(http: httpx.Client) -> None:
    a = new_session(http, TOKEN_A)
    b = new_session(http, TOKEN_B, tenant="desk-a")  # the body cannot choose the owner
    listed = {
        token: {
            s["session_id"]: s["spec"]["tenant"]
            for s in http.get("/v1/sessions", headers=bearer(token)).json()["sessions"]
        }
        for token in (TOKEN_A, TOKEN_B, TOKEN_ADMIN)
    }
    assert a in listed[TOKEN_A] and b not in listed[TOKEN_A]
    assert b in listed[TOKEN_B] and a not in listed[TOKEN_B]
    assert set(listed[TOKEN_A].values()) == {"desk-a"}
    assert listed[TOKEN_B][b] == "desk-b"
    assert listed[TOKEN_ADMIN][a] == "desk-a" and listed[TOKEN_ADMIN][b] == "desk-b"
    admin = bearer(TOKEN_ADMIN)
    assert http.post(f"/v1/sessions/{a}/cancel", json={}, headers=admin).status_code == 200
    assert http.delete(f"/v1/sessions/{b}", headers=admin).status_code == 204


def test_the_remote_client_sees_not_found_on_another_tenants_session(
    memory_api: ApiThread,
) -> None:
    with (
        htcgrid.connect(memory_api.url, token=TOKEN_A) as a,
        htcgrid.connect(memory_api.url, token=TOKEN_B) as b,
    ):
        session = a.session()
        with pytest.raises(htcgrid.NotFound):
            b.attach(session.session_id)
        with pytest.raises(htcgrid.NotFound):
            b.delete_session(session.session_id)
        assert session.session_id not in {s.session_id for s in b.sessions()}


def test_a_wrong_token_never_reaches_the_logs(
    memory_api: ApiThread, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "htc_this-token-must-not-be-logged"
    with caplog.at_level(logging.DEBUG):
        for path in ("/v1/info", "/v1/sessions", "/v1/sessions/s1/counts"):
            r = httpx.get(memory_api.url + path, headers=bearer(secret))
            assert r.status_code == 401 and secret not in r.text
        httpx.get(memory_api.url + "/v1/info", headers=bearer(TOKEN_A))
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "GET /v1/info" in text  # the access log did record the requests...
    assert secret not in text and TOKEN_A not in text  # ...but no token


def test_token_create_appends_a_hash_that_authenticates(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    user = create_token(path, "desk-a")
    admin = create_token(path, "ops", Role.ADMIN)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert user not in text and admin not in text
    table = load_tokens(path)
    assert table.authenticate(user) is not None and table.authenticate(user).tenant == "desk-a"
    who = table.authenticate(admin)
    assert who is not None and who.is_admin
    assert table.authenticate("htc_guess") is None


def test_a_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first = create_token(path, "desk-a")
    served = TokenFile(path)
    second = create_token(path, "desk-b")
    served._checked -= 10  # as if a second had passed
    assert served.table().authenticate(first) is not None
    assert served.table().authenticate(second) is not None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[tokens]]\ntenant = 'a'\nsha256 = 'abc'\n", "64 lower-case hex"),
        ("[[tokens]]\ntenant = 'a b'\nsha256 = '" + "0" * 64 + "'\n", "tenant must be"),
        ("[[tokens]]\ntenant = 'a'\nrole = 'root'\nsha256 = '" + "0" * 64 + "'\n", "role"),
        ("[[tokens]]\ntenant = 'a'\ntoken = 'x'\nsha256 = '" + "0" * 64 + "'\n", "unknown key"),
        ("tokens = 3\n", "array of tables"),
        ("[[tokens]\n", "not valid TOML"),
    ],
)
def test_a_bad_tokens_file_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(htcgrid.InvalidInput, match=problem):
        parse_tokens(text, "tokens.toml")
