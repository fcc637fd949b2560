"""FastAPI dependencies, as ``Annotated`` aliases routes can name in their signatures.

A caller proves who they are with ``X-API-Key`` or ``Authorization: Bearer <access token>``; a
task's event stream also takes that task's own token (``?token=`` or the bearer header). Tokens
are checked against the revocation list on every request.

They are ``async def`` although most do not await: FastAPI runs a plain ``def`` dependency in a
worker thread, two thread hops per request, which made every request wait its turn.
"""

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request, status
from redis.exceptions import RedisError

from app.auth import Principal
from app.errors import NotFoundError, ServiceUnavailableError
from app.services import Services
from app.tokens import InvalidTokenError, TokenClaims

CHALLENGE = {"WWW-Authenticate": 'ApiKey, Bearer realm="agent-service"'}
#: Longest token a request may present (ours are a few hundred characters).
MAX_TOKEN_LENGTH = 4096


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
ApiKeyHeader = Annotated[str | None, Header(alias="X-API-Key")]
AuthorizationHeader = Annotated[
    str | None, Header(alias="Authorization", description="Bearer <access token>")
]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers=CHALLENGE)


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def _verify(services: Services, token: str) -> TokenClaims:
    """The token's claims, if it is ours, unexpired, unrevoked, and its user still has a key
    (removing a user's API key retires their tokens too)."""
    try:
        claims = await services.tokens.verify(token)
    except InvalidTokenError as exc:
        raise _unauthorized("invalid, expired or revoked token") from exc
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError("token store unavailable") from exc
    if claims.user_id not in services.authenticator.users:
        raise _unauthorized("invalid, expired or revoked token")
    return claims


async def current_user(
    services: ServicesDep,
    x_api_key: ApiKeyHeader = None,
    authorization: AuthorizationHeader = None,
) -> Principal:
    """The caller of ``X-API-Key`` or of a bearer access token; 401 otherwise."""
    if x_api_key is not None or authorization is None:
        principal = services.authenticator.authenticate(x_api_key)
        if principal is None:
            raise _unauthorized(
                "missing or invalid API key (send X-API-Key, or Authorization: Bearer <token>)"
            )
        return principal
    claims = await _verify(services, _bearer_token(authorization))
    if claims.task_id is not None:
        raise _unauthorized("this token only opens the event stream of its task")
    return Principal(user_id=claims.user_id, expires_at=claims.expires_at)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def stream_user(
    task_id: str,
    services: ServicesDep,
    x_api_key: ApiKeyHeader = None,
    authorization: AuthorizationHeader = None,
    token: Annotated[
        str | None,
        Query(max_length=MAX_TOKEN_LENGTH, description="The token of the submit's stream_url."),
    ] = None,
) -> Principal:
    """The caller of a task's stream: any credential ``current_user`` takes, or a token for this
    very task (in ``?token=`` or the bearer header). A token for another task answers 404, as if
    the task did not exist."""
    if x_api_key is not None or (authorization is None and token is None):
        return await current_user(services, x_api_key, None)
    presented = _bearer_token(authorization) if authorization is not None else token
    assert presented is not None
    claims = await _verify(services, presented)
    if claims.task_id is None:
        if authorization is None:
            raise _unauthorized("an access token goes in the Authorization header, not the URL")
        return Principal(user_id=claims.user_id)
    if claims.task_id != task_id:
        raise NotFoundError("task not found")
    return Principal(user_id=claims.user_id)


StreamUser = Annotated[Principal, Depends(stream_user)]
