"""FastAPI dependencies, as ``Annotated`` aliases routes can name in their signatures."""

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from app.auth import Principal
from app.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_user(
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
