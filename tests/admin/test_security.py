"""The front door's pieces alone: the auth file, the policy's warning and host names."""

from __future__ import annotations

import pytest

from linkd.admin.security import AdminSecurity, AuthFileError, BasicAuthFile, auth_file_line, hash_password


def test_auth_file_checks_passwords_and_roles(tmp_path):
    path = tmp_path / "users"
    path.write_text("\n".join(["# comment", "", auth_file_line("ops", "admin", "s3cret:with:colons"), auth_file_line("ro", "viewer", "x")]) + "\n")
    users = BasicAuthFile.load(path)
    ops = users("ops", "s3cret:with:colons")
    assert ops is not None and ops.is_admin and ops.mechanism == "basic"
    assert users("ro", "x").role == "viewer"
    assert users("ops", "s3cret") is None
    assert users("nobody", "x") is None
    assert "s3cret" not in path.read_text()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "has no users"),
        ("ops:admin\n", "line 1: expected USER:ROLE:HASH"),
        (f"ops:root:{hash_password('x')}\n", "role 'root'"),
        ("ops:admin:plaintext-password\n", "scrypt$N$r$p$SALT$KEY"),
        (f"a:admin:{hash_password('x')}\na:viewer:{hash_password('y')}\n", "line 2: user 'a' appears twice"),
    ],
)
def test_bad_auth_files_are_refused_naming_the_line(tmp_path, content, expected):
    path = tmp_path / "users"
    path.write_text(content)
    with pytest.raises(AuthFileError, match=expected.replace("$", r"\$")):
        BasicAuthFile.load(path)


def test_unauthenticated_api_beyond_loopback_is_warned_about():
    assert AdminSecurity(bound_host="127.0.0.1").exposure_warning() is None
    assert AdminSecurity(bound_host="localhost").exposure_warning() is None
    assert "without authentication" in AdminSecurity(bound_host="0.0.0.0").exposure_warning()
    assert "without authentication" in AdminSecurity(bound_host="10.0.0.5").exposure_warning()
    assert AdminSecurity(bound_host="0.0.0.0", authenticate=lambda u, p: None).exposure_warning() is None
    assert AdminSecurity(bound_host="0.0.0.0", mtls=True).exposure_warning() is None


def test_allowed_host_names():
    names = AdminSecurity(bound_host="10.0.0.5", allowed_hosts=frozenset({"Linkd.Example"})).host_names()
    assert {"localhost", "127.0.0.1", "::1", "10.0.0.5", "linkd.example"} <= names
    assert "0.0.0.0" not in AdminSecurity(bound_host="0.0.0.0").host_names()
