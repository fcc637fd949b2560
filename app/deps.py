"""FastAPI dependencies, as ``Annotated`` aliases routes can name in their signatures.

They are ``async def`` although they do not await: FastAPI runs a plain ``def`` dependency in a
worker thread, two thread hops per request, which made every request wait its turn.
"""

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request, status

from app.auth import Principal
from app.errors import NotFoundError
from app.services import Services
from app.stream_tokens import InvalidStreamTokenError


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_user(
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> Principal:
    """The caller identified by ``X-API-Key``; 401 when it is missing or unknown."""
    principal = services.authenticator.authenticate(x_api_key)
    if principal is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key (send it in the X-API-Key header)",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def stream_user(
    task_id: str,
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
    token: Annotated[str | None, Query(description="The token of the submit's stream_url.")] = None,
) -> Principal:
    """The caller of a task's stream: ``X-API-Key``, or a stream token for this very task.

    A token for another task answers 404, as if the task did not exist.
    """
    if x_api_key is not None or token is None:
        return await current_user(services, x_api_key)
    try:
        grant = services.tokens.verify(token)
    except InvalidStreamTokenError as exc:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="invalid or expired stream token",
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc
    if grant.task_id != task_id:
        raise NotFoundError("task not found")
    return grant.principal


StreamUser = Annotated[Principal, Depends(stream_user)]
