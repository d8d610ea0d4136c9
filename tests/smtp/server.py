#!/usr/bin/env python3
"""A real SMTP server on loopback for the e-mail tests (tests/tests/notifications.rs).

aiosmtpd (Debian's python3-aiosmtpd, the PyPI project) serves one port on
127.0.0.1: STARTTLS required, implicit TLS, or plain; with AUTH required when
--user is given. It prints {"port": N} once listening, then one JSON object
per accepted message: envelope, the raw message, whether the connection was
TLS and whether the client authenticated. It runs until killed.
"""

import argparse
import asyncio
import json
import socket
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", choices=["starttls", "implicit", "none"], default="starttls")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    context = None
    if args.tls != "none":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.user
            and auth_data.password.decode() == args.password
        )
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            print(
                json.dumps(
                    {
                        "from": envelope.mail_from,
                        "to": envelope.rcpt_tos,
                        "data": envelope.content.decode("utf-8", "replace"),
                        "tls": args.tls == "implicit" or session.ssl is not None,
                        "user": session.auth_data if session.authenticated else None,
                    }
                ),
                flush=True,
            )
            return "250 OK queued"

    def factory():
        return SMTP(
            Handler(),
            hostname="smtp.test",
            tls_context=context if args.tls == "starttls" else None,
            require_starttls=args.tls == "starttls",
            authenticator=authenticator if args.user else None,
            auth_required=bool(args.user),
            # With implicit TLS aiosmtpd does not see the TLS layer itself.
            auth_require_tls=args.tls == "starttls",
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(16)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory, sock=sock, ssl=context if args.tls == "implicit" else None
        )
        print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
