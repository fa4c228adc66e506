"""`linkd serve`'s admin API security flags and `linkd admin-password`, kept beside the front door they
configure (linkd.admin.security) so the CLI module only wires them in."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("admin API security (see the operator guide, Securing the admin API)")
    group.add_argument("--admin-tls-cert", help="PEM certificate (chain) the admin API serves HTTPS with")
    group.add_argument("--admin-tls-key", help="PEM private key of --admin-tls-cert")
    group.add_argument("--admin-tls-ca", help="PEM CA bundle: require client certificates signed by it (mTLS)")
    group.add_argument("--admin-basic-auth-file", help="USER:ROLE:HASH lines (linkd admin-password); HTTP Basic on every route but the health checks")
    group.add_argument("--admin-auth", choices=["none", "file", "users"],
                       help="who the admin API's HTTP Basic checks: none, file (--admin-basic-auth-file; the default when it is given) "
                            "or users (linkd's SCRAM users; with --authorizer standard, DESCRIBE on CLUSTER reads, ALTER on CLUSTER changes)")
    group.add_argument("--admin-allowed-host", action="append", metavar="NAME",
                       help="a Host/Origin name the admin API answers to besides loopback names and its bind address; repeatable")


def serve_config(args: argparse.Namespace) -> dict:
    """The ServeConfig fields of the admin security flags; ValueError names a flag that cannot work."""
    from ..daemon import AdminTls

    cert, key, ca = args.admin_tls_cert, args.admin_tls_key, args.admin_tls_ca
    if bool(cert) != bool(key):
        raise ValueError("--admin-tls-cert and --admin-tls-key go together")
    if ca and not cert:
        raise ValueError("--admin-tls-ca (mTLS) needs --admin-tls-cert and --admin-tls-key")
    for flag, value in (("--admin-tls-cert", cert), ("--admin-tls-key", key), ("--admin-tls-ca", ca), ("--admin-basic-auth-file", args.admin_basic_auth_file)):
        if value and not Path(value).is_file():
            raise ValueError(f"{flag} {value}: no such file")
    if cert:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"--admin-tls-cert {cert} / --admin-tls-key {key}: not a usable PEM certificate and key ({getattr(exc, 'reason', None) or exc})") from None
        try:
            if ca:
                context.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"--admin-tls-ca {ca}: not a usable PEM CA bundle ({getattr(exc, 'reason', None) or exc})") from None
    auth = getattr(args, "admin_auth", None) or ("file" if args.admin_basic_auth_file else "none")
    if auth == "file" and not args.admin_basic_auth_file:
        raise ValueError("--admin-auth file needs --admin-basic-auth-file")
    if auth != "file" and args.admin_basic_auth_file:
        raise ValueError(f"--admin-basic-auth-file is only used with --admin-auth file, not {auth}")
    if auth == "users" and getattr(args, "authorizer", "none") in (None, "none"):
        raise ValueError("--admin-auth users needs --authorizer standard: the ACLs decide who may read (DESCRIBE on CLUSTER) "
                         "and change (ALTER on CLUSTER) through the admin API, and --super-users who may do everything")
    if args.admin_basic_auth_file:
        from .security import BasicAuthFile

        BasicAuthFile.load(Path(args.admin_basic_auth_file))  # a bad file stops the daemon here, naming the line
    return {
        "admin_tls": AdminTls(Path(cert), Path(key), Path(ca) if ca else None) if cert else None,
        "admin_basic_auth_file": Path(args.admin_basic_auth_file) if args.admin_basic_auth_file else None,
        "admin_allowed_hosts": tuple(args.admin_allowed_host or ()),
        "admin_auth": "users" if auth == "users" else None,
    }


def add_password_command(sub) -> None:
    p = sub.add_parser("admin-password", help="print a --admin-basic-auth-file line for USER (password from the terminal or stdin)")
    p.add_argument("user")
    p.add_argument("--role", default="admin", choices=["admin", "viewer"], help="admin may change things, viewer may only read (default admin)")
    p.set_defaults(func=_admin_password)


def _admin_password(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import getpass

    from .security import auth_file_line

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("linkd admin-password: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("linkd admin-password: empty password", file=sys.stderr)
        return 1
    try:
        print(auth_file_line(args.user, args.role, password))
    except ValueError as exc:
        print(f"linkd admin-password: {exc}", file=sys.stderr)
        return 1
    return 0
