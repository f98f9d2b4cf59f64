"""Admin routes: reload and the change routes. They answer only with DOTCOS_ADMIN_TOKEN set (404
saying so otherwise); the token is compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException

from service.api.errors import error_responses
from service.api.handlers import to_matrix
from service.api.routes import app_state
from service.api.schemas import (
    AttributesRequest,
    ChangeResponse,
    DeleteRequest,
    ReloadItem,
    ReloadReport,
    UpsertRequest,
)
from service.core.changes import delete, set_attributes, upsert

ADMIN_OFF = "admin routes are off: set DOTCOS_ADMIN_TOKEN to turn them on"


def require_admin(request: Request) -> None:
    """404 while the admin routes are off, 401 without a bearer token, 403 with a wrong one."""
    settings = app_state(request).settings
    if not settings.admin_enabled:
        raise HTTPException(404, ADMIN_OFF)
    token = settings.admin_token
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


@router.post("/v1/admin/reload", response_model=ReloadReport, responses=error_responses(401, 403, 404, 413))
def reload(request: Request) -> ReloadReport:
    """Check every collection's CURRENT now and load what changed (what polling does)."""
    outcomes = app_state(request).registry.refresh()
    return ReloadReport(results=[ReloadItem(**o.__dict__) for o in outcomes])


CHANGE_ERRORS = error_responses(400, 401, 403, 404, 413, 415, 422, 503)


@router.post("/v1/collections/{name}/delete", response_model=ChangeResponse, responses=CHANGE_ERRORS)
async def delete_ids(name: str, body: DeleteRequest, request: Request) -> ChangeResponse:
    """Delete documents: journaled durably before the answer, hidden by every worker within
    DOTCOS_OVERLAY_REFRESH_S, folded in by the next `--from-current` build."""
    state = app_state(request)
    written = await delete(state.registry.get(name), body.ids, state.settings.overlay)
    return ChangeResponse(collection=name, position=written.position, count=written.count, unknown=written.unknown)


@router.post("/v1/collections/{name}/upsert", response_model=ChangeResponse, responses=CHANGE_ERRORS)
async def upsert_documents(name: str, body: UpsertRequest, request: Request) -> ChangeResponse:
    """Insert or replace whole documents (the vector and every attribute: those left out become
    null), journaled like deletes; searched exactly beside the index until the next rebuild."""
    state = app_state(request)
    vectors = to_matrix(body.vectors, "vectors") if body.vectors else None
    written = await upsert(state.registry.get(name), body.ids, vectors, body.attributes, state.settings.overlay)
    return ChangeResponse(collection=name, position=written.position, count=written.count)


@router.post("/v1/collections/{name}/attributes", response_model=ChangeResponse, responses=CHANGE_ERRORS)
async def change_attributes(name: str, body: AttributesRequest, request: Request) -> ChangeResponse:
    """Set or unset attributes of stored documents, merged into what they hold (vectors and other
    attributes unchanged), journaled like the other changes and applied by filters, group_by and
    with_attributes in every worker within DOTCOS_OVERLAY_REFRESH_S."""
    state = app_state(request)
    version = state.registry.get(name)
    written = await set_attributes(version, body.ids, body.values, body.unset, state.settings.overlay)
    return ChangeResponse(collection=name, position=written.position, count=written.count, unknown=written.unknown)
