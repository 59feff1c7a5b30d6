"""The control API of the demo tenant: what tests, the benchmark and the CLI call between
requests to change the directory (tracked by delta queries), expire tokens and delta state, and
sign a user in on a device. Mixed into :class:`~.server.Emulator`, whose state it changes."""

from __future__ import annotations

from ..changes import ChangeTracker
from ..directory import Directory


class ControlAPI:
    """The emulator's public methods beyond start and stop (``Emulator`` sets the state they use:
    ``change_lock``, ``state_lock``, ``generation``, ``tracker`` and the faces)."""

    # -- directory ------------------------------------------------------------

    @property
    def directory(self) -> Directory:
        return self._directory

    @directory.setter
    def directory(self, value: Directory) -> None:
        """Serve another directory: its recycle bin starts empty and every delta token expires."""
        value.reindex()
        with self.change_lock:
            with self.state_lock:
                self._directory = value
                self.generation += 1
            self.tracker = ChangeTracker(value, self.tracker.version)
            self.delta.expire_tokens()

    def reindex(self) -> None:
        """Call after mutating ``directory`` in place; new requests see the change.

        The change log cannot see in-place changes, so every delta token issued
        so far expires (410 ``resyncRequired``): clients start a full round.
        """
        with self.change_lock:
            with self.state_lock:
                self._directory.reindex()
                self.generation += 1
            self.delta.expire_tokens()

    def expire_delta_tokens(self) -> None:
        """Expire every delta token issued so far (deltaLinks and skiptokens of running rounds)."""
        with self.change_lock:
            self.delta.expire_tokens()

    # -- change API ------------------------------------------------------------

    def _change(self, method: str, *args):
        with self.change_lock:
            result = getattr(self.tracker, method)(*args)
            with self.state_lock:
                self.generation += 1  # cached id lists of collections are recomputed
        return result

    def add_user(self, user: dict) -> dict:
        """Create a user; returns a copy of it as stored.

        ``user`` needs ``id`` (a GUID not used by any object) and a unique
        ``userPrincipalName``; other keys are user properties the schema knows
        (case-insensitive names). Missing :data:`~.directory.USER_PROPERTIES`
        are ``None`` (lists ``[]``), except ``accountEnabled`` True, ``userType``
        ``"Member"`` and all 15 ``onPremisesExtensionAttributes`` (given ones merged).
        """
        return self._change("add_user", user)

    def update_user(self, user_id: str, changes: dict) -> dict:
        """Set top-level properties (None allowed); ``onPremisesExtensionAttributes`` is merged.

        Only values that differ are recorded; returns a copy of the user.
        """
        return self._change("update_user", user_id, changes)

    def set_manager(self, user_id: str, manager_id: str | None) -> None:
        """Set a user's manager (an active user or an orgContact) or remove it with None."""
        self._change("set_manager", user_id, manager_id)

    def soft_delete_user(self, user_id: str) -> None:
        """Move a user to the recycle bin: it leaves its groups; its reports lose their manager."""
        self._change("soft_delete_user", user_id)

    def restore_user(self, user_id: str) -> dict:
        """Bring a soft-deleted user back with its memberships, manager and reports (where they still exist)."""
        return self._change("restore_user", user_id)

    def hard_delete_user(self, user_id: str) -> None:
        """Delete a user for good, active or soft-deleted."""
        self._change("hard_delete_user", user_id)

    def add_group(self, group: dict, members=()) -> dict:
        """Create a group (``id`` GUID and ``displayName`` required) with the given direct member ids.

        Missing properties: ``mailEnabled`` False, ``securityEnabled`` True,
        ``groupTypes`` [], ``createdDateTime`` now, the rest None.
        """
        return self._change("add_group", group, list(members) if not isinstance(members, str) else members)

    def update_group(self, group_id: str, changes: dict) -> dict:
        """Set top-level group properties; returns a copy of the group."""
        return self._change("update_group", group_id, changes)

    def delete_group(self, group_id: str, soft: bool = False) -> None:
        """Delete a group (from the recycle bin too); ``soft`` moves an active one to the recycle bin.

        It leaves the groups it was a member of either way.
        """
        self._change("delete_group", group_id, soft)

    def restore_group(self, group_id: str) -> dict:
        """Bring a soft-deleted group back with the members and parent groups that still exist."""
        return self._change("restore_group", group_id)

    def add_member(self, group_id: str, member_id: str) -> None:
        """Add a user, group or other directory object as a direct member (ValueError if it is one)."""
        self._change("add_member", group_id, member_id)

    def remove_member(self, group_id: str, member_id: str) -> None:
        """Remove a direct member (KeyError if it is not one)."""
        self._change("remove_member", group_id, member_id)

    @property
    def graph_url(self) -> str:
        """``{base_url}/v1.0``."""
        return f"{self.base_url}/v1.0"

    def expire_tokens(self) -> None:
        """Make every issued access token expired (tests of token refresh)."""
        self.identity.expire_tokens()

    # -- identity and Workday test API -------------------------------------------

    def add_certificate(self, cert_pem: bytes | str) -> str:
        """Register a public certificate (PEM) as a key credential of the app; returns its SHA-1
        thumbprint (upper-case hex). Client assertions signed with its key are then accepted while
        the certificate is valid (ValueError if ``cert_pem`` is not a certificate)."""
        return self.identity.add_certificate(cert_pem)

    def remove_certificate(self, thumbprint: str) -> None:
        """Unregister a certificate by its SHA-1 thumbprint (KeyError if it is not registered)."""
        self.identity.remove_certificate(thumbprint)

    def pending_device_codes(self) -> list[str]:
        """User codes of device sign-ins waiting for the user (not expired, approved or declined)."""
        return self.identity.pending_device_codes()

    def approve_device_code(self, user_code: str, user_principal_name: str) -> None:
        """The user enters ``user_code`` and signs in as ``user_principal_name``: the next poll
        gets tokens. KeyError for an unknown, expired or finished code or an unknown user;
        ValueError for a disabled account."""
        self.identity.approve_device_code(user_code, user_principal_name)

    def decline_device_code(self, user_code: str) -> None:
        """The user refuses the sign-in: the next poll gets ``authorization_declined``."""
        self.identity.decline_device_code(user_code)

    def expire_device_codes(self) -> None:
        """End every device code now: polls get ``expired_token`` (tests of an abandoned sign-in)."""
        self.identity.expire_device_codes()

    def expire_workday_tokens(self) -> None:
        """Every Workday access token issued so far expires: report requests with one get 401."""
        self.workday_face.expire_tokens()

    @property
    def workday_report_url(self) -> str | None:
        """The RaaS URL of the Workday report (without ``?format=json``), or None."""
        return None if self.workday is None or self.base_url is None else self.base_url + self.workday.report_path

    @property
    def workday_token_url(self) -> str | None:
        """The Workday tenant's OAuth token endpoint, or None."""
        return None if self.workday is None or self.base_url is None else self.base_url + self.workday.token_path

    def expire_refresh_tokens(self) -> None:
        """Every refresh token issued so far expires (invalid_grant AADSTS700082, inactivity)."""
        self.identity.expire_refresh_tokens()

    def revoke_sign_in_sessions(self, user_principal_name: str | None = None) -> None:
        """Graph's revokeSignInSessions: the user's refresh tokens (everyone's with None) are revoked
        (invalid_grant AADSTS50173); access tokens stay valid until they expire, as in Entra."""
        self.identity.revoke_sign_in_sessions(user_principal_name)

    def issued_credentials(self) -> list[str]:
        """Every access token, refresh token and device code issued so far (secret-scanning tests)."""
        return self.identity.issued_credentials()

