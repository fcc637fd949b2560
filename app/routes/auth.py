"""``/api/v1/auth``: exchanging an API key for a short-lived token, and revoking a token.

``POST /token`` needs the API key itself (a token cannot mint a longer-lived successor). Without
a body it issues an access token (``Authorization: Bearer``, every endpoint); with a ``task_id``
of the caller's, a token that opens that task's event stream only. ``POST /revoke`` takes a token
the caller owns and refuses it everywhere from then on. Both leave an audit row.
"""

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from redis.exceptions import RedisError

from app.deps import ApiKeyHeader, CurrentUser, ServicesDep, current_user
from app.errors import NotFoundError, ServiceUnavailableError, error_responses
from app.schemas import RevokeRequest, TokenIssued, TokenRequest, TokenRevoked
from app.task_records import find_owned_task
from app.tokens import InvalidTokenError
from storage.audit import AuditAction

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/token", responses=error_responses(401, 404, 413, 422, 429, 503))
async def issue_token(
    services: ServicesDep, x_api_key: ApiKeyHeader = None, body: TokenRequest | None = None
) -> TokenIssued:
    if x_api_key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="send the API key in X-API-Key to get a token",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    user = await current_user(services, x_api_key, None)
    request = body or TokenRequest()
    settings = services.settings
    if request.ttl_seconds is not None and request.ttl_seconds > settings.max_token_ttl:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            detail=[
                {
                    "loc": ["body", "ttl_seconds"],
                    "msg": f"ttl_seconds must be at most {settings.max_token_ttl}",
                    "type": "less_than_equal",
                }
            ],
        )
    if request.task_id is not None:
        await find_owned_task(services.records, request.task_id, owner=user.user_id)
        default_ttl = settings.stream_token_ttl
    else:
        default_ttl = settings.access_token_ttl
    ttl = request.ttl_seconds or default_ttl
    issued = services.tokens.issue(user_id=user.user_id, ttl=ttl, task_id=request.task_id)
    claims = issued.claims
    await services.audit.record(
        AuditAction.TOKEN_ISSUE,
        user_id=user.user_id,
        resource_type="token",
        resource_id=claims.jti,
        details={"scope": claims.scope, "task_id": claims.task_id, "expires_at": claims.expires_at},
    )
    return TokenIssued(
        access_token=issued.token,
        expires_in=ttl,
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
        scope="api" if claims.task_id is None else "task:events",
        task_id=claims.task_id,
        jti=claims.jti,
    )


@router.post("/revoke", responses=error_responses(400, 401, 404, 413, 422, 503))
async def revoke_token(
    body: RevokeRequest, user: CurrentUser, services: ServicesDep
) -> TokenRevoked:
    try:
        claims = services.tokens.decode(body.token, allow_expired=True)
    except InvalidTokenError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="token is malformed or was not issued by this service",
        ) from exc
    if claims.user_id != user.user_id:
        raise NotFoundError("token not found")
    expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
    still_valid = expires_at > datetime.now(UTC)
    if still_valid:
        try:
            await services.tokens.revoke(claims)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailableError("token store unavailable; nothing was revoked") from exc
    await services.audit.record(
        AuditAction.TOKEN_REVOKE,
        user_id=user.user_id,
        resource_type="token",
        resource_id=claims.jti,
        details={"scope": claims.scope, "task_id": claims.task_id, "was_valid": still_valid},
    )
    return TokenRevoked(jti=claims.jti, revoked=still_valid, expires_at=expires_at)
