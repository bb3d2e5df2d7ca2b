"""The control-plane HTTP API (``/api/v1``), one module per noun."""

from __future__ import annotations

from fastapi import APIRouter

from liqi.control.api import (
    accounts,
    buckets,
    datasets,
    job_files,
    jobs,
    models,
    objects,
    resources,
    services,
)

router = APIRouter()
router.include_router(accounts.router)
router.include_router(buckets.router)
router.include_router(objects.router)
router.include_router(objects.presigned_router)
router.include_router(resources.router)
router.include_router(datasets.router)
router.include_router(jobs.router)
router.include_router(job_files.router)
router.include_router(job_files.claim_router)
router.include_router(models.router)
router.include_router(services.router)

__all__ = ["router"]
