"""The device sign-in page, the ``verification_uri`` of device-code sign-ins: a form a person
uses to approve or decline one by hand (tests call ``approve_device_code`` instead)."""

from __future__ import annotations

import html

from ..transport import Request, Response, common_headers
from .identity import IdentityFace, form_fields

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo tenant: device sign-in</title></head>
<body><h1>Demo tenant: device sign-in</h1>{notice}
<form method="post" action="/devicelogin">
<p><label>Code <input name="code" autocomplete="off" required></label></p>
<p><label>Sign in as (userPrincipalName) <input name="username" size="40"></label></p>
<p><button name="action" value="approve">Sign in</button> <button name="action" value="decline">Decline</button></p>
</form>
<p>No password is asked: this is the demo-tenant emulator.</p></body></html>
"""


def device_login(identity: IdentityFace, request: Request) -> Response:
    """Show the form (GET) or approve or decline the sign-in it names (POST)."""
    def page(status: int, notice: str = "") -> Response:
        body = PAGE.format(notice=f"<p>{html.escape(notice)}</p>" if notice else "")
        return Response(status, body.encode("utf-8"),
                        common_headers(request, "text/html; charset=utf-8"))

    if request.method == "GET":
        return page(200)
    if request.method != "POST":
        return page(405, "Use GET to see the form and POST to send it.")
    form = form_fields(request)
    code, username = form.get("code", "").strip(), form.get("username", "").strip()
    try:
        if form.get("action") == "decline":
            identity.decline_device_code(code)
            return page(200, "You declined the sign-in. You can close this window.")
        if not username:
            return page(400, "Enter the userPrincipalName to sign in as.")
        identity.approve_device_code(code, username)
        return page(200, f"You signed in as {username} on the device. You can close this window.")
    except (KeyError, ValueError) as exc:
        return page(400, str(exc.args[0]) if exc.args else "The sign-in failed.")
