"""Admin routes, mounted only when DOTCOS_ADMIN_TOKEN is set; the token is compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException

from service.api.errors import error_responses
from service.api.handlers import to_matrix
from service.api.routes import app_state
from service.api.schemas import ChangeResponse, DeleteRequest, ReloadItem, ReloadReport, UpsertRequest
from service.core.changes import delete, upsert


def require_admin(request: Request) -> None:
    """401 without a bearer token, 403 with a wrong one."""
    token = app_state(request).settings.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401, "Authorization: Bearer <DOTCOS_ADMIN_TOKEN> required", headers={"WWW-Authenticate": "Bearer"}
        )
    expected = token.get_secret_value() if token else ""
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(403, "admin token rejected")


router = APIRouter(dependencies=[Depends(require_admin)])


@router.post("/v1/admin/reload", response_model=ReloadReport, responses=error_responses(401, 403, 413))
def reload(request: Request) -> ReloadReport:
    """Check every collection's CURRENT now and load what changed (what polling does)."""
    outcomes = app_state(request).registry.refresh()
    return ReloadReport(results=[ReloadItem(**o.__dict__) for o in outcomes])


CHANGE_ERRORS = error_responses(400, 401, 403, 404, 413, 422, 503)


@router.post("/v1/collections/{name}/delete", response_model=ChangeResponse, responses=CHANGE_ERRORS)
async def delete_ids(name: str, body: DeleteRequest, request: Request) -> ChangeResponse:
    """Delete documents: journaled durably before the answer, hidden by every worker within
    DOTCOS_OVERLAY_REFRESH_S, folded in by the next `--from-current` build."""
    state = app_state(request)
    written = await delete(state.registry.get(name), body.ids, state.settings.overlay)
    return ChangeResponse(collection=name, position=written.position, count=written.count, unknown=written.unknown)


@router.post("/v1/collections/{name}/upsert", response_model=ChangeResponse, responses=CHANGE_ERRORS)
async def upsert_documents(name: str, body: UpsertRequest, request: Request) -> ChangeResponse:
    """Insert or replace documents (vectors and attributes), journaled like deletes; searched
    exactly beside the index until the next rebuild."""
    state = app_state(request)
    vectors = to_matrix(body.vectors, "vectors") if body.vectors else None
    written = await upsert(state.registry.get(name), body.ids, vectors, body.attributes, state.settings.overlay)
    return ChangeResponse(collection=name, position=written.position, count=written.count)
