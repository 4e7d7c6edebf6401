"""What each route of the ceremony service may answer, for its OpenAPI document.

Every status a route can give is declared, each refusal with the ``ErrorBody`` shape, so
that clients (and schemathesis) know them all. Routes come in families that refuse
alike; a new route takes its family's set, ``responses=answers.ENROLLMENT``, and a new
family is ``refusals(...)`` of the statuses its services raise, plus what every route
that reads a credential can answer (``AUTHENTICATED``).
"""

from __future__ import annotations

from typing import Any

from ceremony.protocol import AutoEnrollPending, ErrorBody

Responses = dict[int | str, dict[str, Any]]

WHY: dict[int, str] = {
    400: "The request is malformed: the message names the field and what is wrong",
    401: "No credential, or one that is not valid",
    403: "Refused: the role, token, proof or device check that failed is named",
    404: "The device, user, inventory, challenge or check named is not known (or Jamf "
    "webhooks are off)",
    409: "The device is not in the state this step needs (not enrolled, already enrolled), "
    "the name is taken, or the preference changed since it was read",
    413: "The request body is larger than the service reads",
    429: "Too many attempts: retry after Retry-After seconds",
    431: "The request has too many headers, or headers too large",
    503: "The inventory database (or the rate-limit server, or the queue) is unavailable",
}
HEADERS: dict[int, dict[str, Any]] = {
    429: {
        "Retry-After": {
            "description": "seconds until the next attempt is let in",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}

# Any route: a body or headers it will not read, a database that does not answer.
ANYWHERE = (400, 413, 431, 503)
AUTHENTICATED = (*ANYWHERE, 401)


def refusals(*statuses: int) -> Responses:
    """The refusals ``statuses``, each declared with the error shape."""
    answers: Responses = {}
    for status in sorted(set(statuses)):
        answers[status] = {"model": ErrorBody, "description": WHY[status]}
        if status in HEADERS:
            answers[status]["headers"] = HEADERS[status]
    return answers


PENDING: Responses = {
    202: {
        "model": AutoEnrollPending,
        "description": "The check has not answered yet: poll Location",
        "headers": {
            "Location": {
                "description": "where to poll for the verdict",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    }
}

# /v1/enroll/*: tokens, roles and proofs (403), devices and challenges (404), device state.
ENROLLMENT = refusals(*AUTHENTICATED, 403, 404, 409)
# /v1/auto-enroll*: as enrollment, plus the per-user rate limit and a pending check.
AUTO_ENROLLMENT = {**refusals(*AUTHENTICATED, 403, 404, 409, 429), **PENDING}
# /v1/authenticate/*: as enrollment.
AUTHENTICATION = refusals(*AUTHENTICATED, 403, 404, 409)
# /v1/whoami: only the credential.
IDENTITY = refusals(*AUTHENTICATED)
# /v1/webhooks/jamf: Jamf Pro's own credential (Basic or a header), the body, webhooks off
# (404 naming the settings), the queue down (503).
WEBHOOKS = refusals(*AUTHENTICATED, 404)
# /v1/admin/*: the caller's role (403), the device, user or inventory named (404), a
# device or preference not in the state the change needs, or a name taken (409).
ADMIN = refusals(*AUTHENTICATED, 403, 404, 409)
# /v1/me/*: only the credential.
OWN = refusals(*AUTHENTICATED)
