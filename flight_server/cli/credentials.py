"""The credential flags every ``quiver`` command that talks to a server takes.

``add_credential_arguments`` adds ``--token``, ``--token-env``, ``--user`` and
``--tls-root-certs`` (plus the hidden older spellings ``--username`` and ``--password``
that ``quiver health`` used to take, so existing scripts and container health checks keep
working); ``credentials_of`` checks them and says how to log in. This module imports
nothing heavy: the health check runs it every few seconds in a container.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from quiver.root_error import Kind, QuiverError

__all__ = ["CredentialError", "Credentials", "add_credential_arguments", "credentials_of"]

PASSWORD_ENV = "QUIVER_PASSWORD"


class CredentialError(QuiverError):
    """The credential flags contradict each other or name something missing."""

    kind = Kind.INVALID_INPUT


@dataclass(frozen=True)
class Credentials:
    """How a command authenticates: a bearer token, a username and password, or nothing."""

    token: str | None = None
    username: str | None = None
    password: str | None = None


def add_credential_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                             *, for_what: str = "--server") -> None:
    """Adds the credential flags to ``parser`` (a parser or an argument group)."""
    parser.add_argument("--token", default=None,
                        help=f"static bearer token for {for_what} (visible in the process "
                        "list: prefer --token-env)")
    parser.add_argument("--token-env", default=None, metavar="VAR",
                        help=f"environment variable holding the bearer token for {for_what}; "
                        "when it holds several, comma-separated, the first is used")
    parser.add_argument("--user", default=None, metavar="NAME[:PASSWORD]",
                        help=f"log in to {for_what} with basic authentication; a bare NAME "
                        f"takes the password from ${PASSWORD_ENV}")
    # The spellings ``quiver health`` took first; kept for scripts and compose files.
    parser.add_argument("--username", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--password", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tls-root-certs", type=Path, default=None, metavar="PEM",
                        help="PEM file of the certificate authorities to trust for a "
                        f"grpc+tls:// {for_what}")


def given_flags(args: argparse.Namespace) -> list[str]:
    """The credential flags set in ``args`` (to refuse them where no server is used)."""
    return [flag for flag, value in (
        ("--token", args.token), ("--token-env", args.token_env), ("--user", args.user),
        ("--username", args.username), ("--password", args.password),
        ("--tls-root-certs", args.tls_root_certs)) if value is not None and value != ""]


def credentials_of(args: argparse.Namespace) -> Credentials:
    """The credentials the flags in ``args`` ask for; ``CredentialError`` when they clash or
    lack a part."""
    user_flags = [f for f, v in (("--user", args.user), ("--username", args.username)) if v]
    given = [name for name, value in (("--token", args.token), ("--token-env", args.token_env))
             if value] + user_flags
    if len(given) > 1:
        raise CredentialError(f"give only one of {', '.join(given)}")
    if args.token_env:
        value = os.environ.get(args.token_env)
        if value is None:
            raise CredentialError(f"the environment variable {args.token_env!r} is not set")
        tokens = [part.strip() for part in value.split(",") if part.strip()]
        if not tokens:
            raise CredentialError(f"the environment variable {args.token_env!r} holds no token")
        return _no_password(args, Credentials(token=tokens[0]))
    if args.token:
        if not args.token.strip():
            raise CredentialError("--token is empty")
        return _no_password(args, Credentials(token=args.token.strip()))
    if user_flags:
        flag = user_flags[0]
        name, sep, password = (args.user or args.username).partition(":")
        if flag == "--username":
            name, sep, password = args.username, "", ""
        if not name:
            raise CredentialError(f"{flag} wants NAME or NAME:PASSWORD")
        if not sep:
            password = args.password if args.password is not None \
                else os.environ.get(PASSWORD_ENV)
            if password is None:
                raise CredentialError(f"{flag} {name} needs --password, ${PASSWORD_ENV} "
                                      "or NAME:PASSWORD")
        elif args.password is not None:
            raise CredentialError("give the password once: in --user NAME:PASSWORD or "
                                  "--password")
        return Credentials(username=name, password=password)
    if args.password is not None:
        raise CredentialError("--password needs --user NAME")
    return Credentials()


def _no_password(args: argparse.Namespace, creds: Credentials) -> Credentials:
    if args.password is not None:
        raise CredentialError("--password goes with --user, not with a token")
    return creds
