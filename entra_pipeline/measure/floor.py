"""The floor of a sync: what downloading and parsing the same pages costs with nothing else.

A plain loop in a fresh process: one ``requests.Session``, one app token from the identity
platform's token endpoint, then ``GET /v1.0/users/delta?$select=...`` following every
``@odata.nextLink`` to the ``@odata.deltaLink``, and the same for ``/v1.0/groups/delta`` (members
selected). Every page is ``json.loads``-ed and dropped: nothing is kept but counts. No retries,
no checks, no storage: any sync reading the same delta rounds costs at least this much.

Two modes: ``sequential`` reads users, then groups (as a sync that reads one after the other);
``concurrent`` reads both at once on two threads, each with its own session (the best plain loop:
the two chains do not depend on each other). ``--links-out`` keeps the two deltaLinks, and
``--links-in`` reads the changes since them instead of full rounds (the incremental floor).

The child prints one JSON line: wall seconds of the loop, CPU seconds of the whole process
(``getrusage`` user + system), requests, bytes, objects and pages per chain, peak RSS (VmHWM).
The client secret comes from the environment variable named by ``--secret-env``, never the
command line (other users can read process lists).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from entra_pipeline.process import peak_rss_mb

RESOURCES = ("users", "groups")


@dataclass
class Chain:
    """One delta round read page after page: the unavoidable sequential part of a read."""

    resource: str
    pages: int = 0
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0
    delta_link: str | None = None


def app_token(session: requests.Session, base_url: str, tenant_id: str, client_id: str, secret: str,
              ca_path: str) -> str:
    """One client-credentials token for Graph (scope ``{graph}/.default``, as the sync asks)."""
    answer = session.post(f"{base_url}/{tenant_id}/oauth2/v2.0/token", verify=ca_path, timeout=60, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        "scope": f"{base_url}/.default"})
    answer.raise_for_status()
    return answer.json()["access_token"]


def read_chain(session: requests.Session, url: str, params: dict | None, token: str, ca_path: str,
               resource_name: str) -> Chain:
    """Follow one delta round from ``url`` to its deltaLink; every page parsed, nothing kept."""
    chain = Chain(resource_name)
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    while url:
        answer = session.get(url, params=params, headers=headers, verify=ca_path, timeout=600)
        if answer.status_code != 200:
            raise SystemExit(f"floor: GET {url.split('?')[0]} answered {answer.status_code}: {answer.text[:300]}")
        body = json.loads(answer.content)
        chain.pages += 1
        chain.bytes += len(answer.content)
        chain.objects += len(body["value"])
        url, params = body.get("@odata.nextLink"), None
        chain.delta_link = body.get("@odata.deltaLink")
    chain.seconds = round(time.monotonic() - started, 3)
    return chain


def read(base_url: str, tenant_id: str, client_id: str, secret: str, ca_path: str, selects: dict[str, str],
         mode: str, links: dict[str, str] | None = None) -> dict:
    """The floor's loop; ``selects`` maps ``users``/``groups`` to the ``$select`` of a full round,
    ``links`` (the changes since them) replaces full rounds."""
    sessions = {name: requests.Session() for name in RESOURCES}
    for session in sessions.values():
        session.trust_env = False  # no proxy or CA bundle from the environment, as the sync
    started = time.monotonic()
    token = app_token(sessions["users"], base_url, tenant_id, client_id, secret, ca_path)

    def start(name: str) -> tuple[str, dict | None]:
        if links:
            return links[name], None
        return f"{base_url}/v1.0/{name}/delta", {"$select": selects[name]}

    chains: dict[str, Chain] = {}
    if mode == "sequential":
        for name in RESOURCES:
            chains[name] = read_chain(sessions[name], *start(name), token, ca_path, name)
    elif mode == "concurrent":
        failures: list[BaseException] = []

        def work(name: str) -> None:
            try:
                chains[name] = read_chain(sessions[name], *start(name), token, ca_path, name)
            except BaseException as exc:  # reported below, from the main thread
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(name,)) for name in RESOURCES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
    else:
        raise ValueError(f"mode must be sequential or concurrent, not {mode!r}")
    wall = time.monotonic() - started
    for session in sessions.values():
        session.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "mode": mode, "incremental": bool(links), "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "requests": sum(c.pages for c in chains.values()), "token_requests": 1,
        "bytes": sum(c.bytes for c in chains.values()),
        "chains": {name: asdict(chains[name]) for name in RESOURCES},
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--tenant-id", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--secret-env", required=True, help="environment variable holding the client secret")
    parser.add_argument("--ca", required=True, help="CA bundle that verifies the server")
    parser.add_argument("--users-select", required=True)
    parser.add_argument("--groups-select", required=True)
    parser.add_argument("--mode", choices=("sequential", "concurrent"), default="sequential")
    parser.add_argument("--links-in", type=Path, help="read the changes since these deltaLinks (JSON)")
    parser.add_argument("--links-out", type=Path, help="write the deltaLinks the rounds ended with (JSON)")
    args = parser.parse_args(argv)
    links = json.loads(args.links_in.read_text()) if args.links_in else None
    result = read(args.base_url, args.tenant_id, args.client_id, os.environ[args.secret_env], args.ca,
                  {"users": args.users_select, "groups": args.groups_select}, args.mode, links)
    if args.links_out:
        args.links_out.write_text(json.dumps({name: result["chains"][name]["delta_link"] for name in RESOURCES}))
    for chain in result["chains"].values():
        chain.pop("delta_link")  # a bearer of the tenant's state: not for stdout
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
